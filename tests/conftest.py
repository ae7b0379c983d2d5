"""Shared fixtures live in plugin modules, one per subject, so that each stays small."""

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.stack",
    "tests.fixtures.pipeline",
    "tests.fixtures.queue",
    "tests.fixtures.crm",
    "tests.fixtures.admin",
    "tests.fixtures.fake_stripe",
    "tests.fixtures.usage",
    "tests.fixtures.mytracker",
]
