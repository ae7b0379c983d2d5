"""The ``[mytracker]`` part of the TOML: which myTracker app receives the events.

```toml
[mytracker]
app_id = 12345       # myTracker's idApp; the API key is MYTRACKER_API_KEY (environment)
```

No table (or no ``app_id``): the sink is off and the planners plan nothing for it.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from bridge.core.settings import Section


class TrackerConfig(Section):
    TABLE: ClassVar[str] = "mytracker"

    # An identifier that myTracker shows in its URLs, not a secret: the key is the secret.
    app_id: int | None = Field(default=None, gt=0)

    @property
    def enabled(self) -> bool:
        return self.app_id is not None


OFF = TrackerConfig()
