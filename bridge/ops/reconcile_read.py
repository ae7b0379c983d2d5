"""Reading every license's key back from Cryptolens for ``reconcile``: GetKeys pages or
one GetKey per license, per product whichever takes fewer calls.

GetWebAPILog would say which keys changed since a time in one call per product, but not
how they changed (a block and an unblock are both "changed"); a GetKeys page answers for
99 keys directly: 100,000 licenses are about 1,000 calls (``bench --reconcile``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from bridge.cryptolens import AccessDenied, CryptolensClient, NotFound
from bridge.cryptolens.models import KeysPage, LicenseKey
from bridge.ops.reconcile_compare import Drift, Report, compare
from bridge.ops.reconcile_expect import Expected

CONCURRENCY = 8  # GetKey / GetKeys calls in flight
PAGE_SIZE = 99  # keys in a GetKeys page


def by_pages(licenses: int, pages: int) -> bool:
    """Whether to read ``licenses`` keys of a product through GetKeys' ``pages`` (99 keys
    a page) rather than one GetKey each: whichever makes fewer calls. Every call costs
    about the same round trip (80 ms and more to Cryptolens) and the page reads are
    spread over the same few connections, so calls are the cost; a tie goes to GetKey,
    whose answer is the one key asked for."""
    return pages < licenses


def _pages(keys: int) -> int:
    return -(-keys // PAGE_SIZE)


async def check(
    client: CryptolensClient,
    wanted: Sequence[Expected],
    *,
    held: Mapping[int, int] | None = None,
    advance: Callable[[], None] = lambda: None,
) -> Report:
    """Read every license back from Cryptolens; the drift found (nothing is changed).

    Per product, the keys come from GetKeys pages or from one GetKey each, whichever
    takes fewer calls (:func:`by_pages`). ``held`` is how many keys the store holds per
    product (all of them, not only those ``wanted``): Cryptolens holds those (less the few
    deleted there), so ``ceil(held / 99)`` pages is about the least they can cost. A product whose
    licenses to check are no more than that (``--since`` narrowed them to a few) is read
    key by key without a call spent to learn more; otherwise the first page says how
    many pages there really are (the vendor's own keys count too), and the licenses it
    did not hold are read by the rest of the pages or key by key, whichever is fewer.

    A key our store holds that no page returned is read once more by GetKey: NotFound
    says it is gone (deleted in Cryptolens), and a key a deletion moved onto a page
    already read (pages are offsets) is still found. Either way each license goes
    through :func:`compare`, the one comparison, and the progress advances per license.
    """
    reader = _Reader(client, held or {}, advance)
    products: dict[int, list[Expected]] = {}
    for want in wanted:
        if want.key is not None and want.product_id is not None and not want.under_way:
            products.setdefault(want.product_id, []).append(want)
        else:
            reader.done(want, None)
    await asyncio.gather(*(reader.product(p, group) for p, group in products.items()))
    for want in wanted:
        reader.report.drift.extend(reader.results.get(want.ref, []))
    return reader.report


class _Reader:
    """One :func:`check`'s reads: at most :data:`CONCURRENCY` calls in flight, each
    license compared once and counted once."""

    def __init__(
        self, client: CryptolensClient, held: Mapping[int, int], advance: Callable[[], None]
    ) -> None:
        self.client, self.held, self.advance = client, held, advance
        self.report = Report()
        self.results: dict[str, list[Drift]] = {}
        self.gate = asyncio.Semaphore(CONCURRENCY)

    def done(self, want: Expected, found: LicenseKey | None) -> None:
        try:
            self.results[want.ref] = compare(want, found)
        except Exception as exc:  # one unreadable key does not stop the others
            self.failed(want, exc)
            return
        self.report.checked += 1
        self.advance()

    def failed(self, want: Expected, exc: BaseException) -> None:
        self.report.errors[want.ref] = f"{type(exc).__name__}: {exc}"
        self.report.checked += 1
        self.advance()

    async def one(self, want: Expected) -> None:
        assert want.key is not None and want.product_id is not None
        try:
            async with self.gate:
                try:
                    found: LicenseKey | None = await self.client.get_key(want.product_id, want.key)
                except NotFound:
                    found = None  # deleted in Cryptolens: the license has no key
        except Exception as exc:
            self.failed(want, exc)
            return
        self.done(want, found)

    async def each(self, wanted: Sequence[Expected]) -> None:
        await asyncio.gather(*(self.one(w) for w in wanted))

    async def page(self, product_id: int, number: int) -> KeysPage:
        async with self.gate:
            return await self.client.get_keys(product_id, page=number)

    async def product(self, product_id: int, group: list[Expected]) -> None:
        if by_pages(len(group), _pages(self.held.get(product_id, 0))):
            await self.paged(product_id, group)
        else:
            await self.each(group)

    async def paged(self, product_id: int, group: list[Expected]) -> None:
        unseen: dict[str, list[Expected]] = {}
        for want in group:
            assert want.key is not None
            unseen.setdefault(want.key, []).append(want)
        unread: list[BaseException] = []

        def take(found: KeysPage) -> None:
            for key in found.keys:
                for want in unseen.pop(key.key, []):
                    self.done(want, key)

        async def read(number: int) -> None:
            try:
                take(await self.page(product_id, number))
            except Exception as exc:
                unread.append(exc)

        try:
            first = await self.page(product_id, 1)
        except AccessDenied:
            # A token made for the worker, before reconcile read pages, may lack GetKeys:
            # GetKey, which it has, still reads every key.
            await self.each(group)
            return
        except Exception as exc:
            unread.append(exc)
        else:
            take(first)
            if by_pages(len(unseen), first.page_count - 1):
                await asyncio.gather(*(read(n) for n in range(2, first.page_count + 1)))
        left = [w for same in unseen.values() for w in same]
        if unread:  # a page unread: what it held is not known, which is not drift
            for want in left:
                self.failed(want, unread[0])
            return
        await self.each(left)
