"""The fault campaign reuses the flow tests' small trained champion."""

from tests.flows.conftest import registry  # noqa: F401
