"""Pure decisions: what the worker's effects (``jobs.effects``) and the dry run
(``bridge.ops.dryrun``) both do with the same facts, so the plan and the run cannot
disagree.

No I/O here: no SQL, no HTTP, no provider package. A caller reads the facts (the key as
Cryptolens has it, the license's record, a provider's config values or hooks) and passes
them in. Modules import only ``bridge.core`` and the standard library.

- ``expiry``: the days an ExtendLicense adds towards an absolute target.
- ``blocks``: whether a block or unblock touches the key (``bridge.core.blocks.decide``,
  then the call it makes given the key's flag).
- ``templates``: the planner's named template, a CRM pipeline's, and how long a creation
  still waits for start events; asked in one place, ``bridge.template_choice``.
- ``customers``: whether a key is linked to a buyer, and the AddCustomer fields.
- ``events``: a RegisterEvent's name, value, currency and Metadata.
- ``deals``: a CRM deal's fetched facts merged into an intent's params.
"""
