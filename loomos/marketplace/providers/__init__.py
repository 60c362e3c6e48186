"""One module per provider behind `base.OfferSource`. Cloud SDKs are imported inside the
functions that use them, so `loomos --help` does not pay for boto3 or the Google clients."""

from __future__ import annotations

import re

from loomos.marketplace.optimizer import MarketInputError
from loomos.marketplace.providers.base import OfferSource

CLOUD_PROVIDERS = ("aws", "gcp", "azure")
# Region names go into API filters (Azure's OData, GCP's list filter): accept only the shapes
# providers use, so a typo cannot change a query's meaning.
_REGION = re.compile(r"^[a-z][a-z0-9-]{1,40}$")


def make_source(name: str, regions: list[str] | None = None) -> OfferSource:
    """A source for `name` with the SDK's usual credential chain."""
    for region in regions or []:
        if not _REGION.match(region):
            raise MarketInputError(f"{region!r} is not a region name (lower-case letters, digits, '-')")
    if name == "aws":
        from loomos.marketplace.providers.aws import AwsOfferSource

        return AwsOfferSource(regions=regions)
    if name == "gcp":
        from loomos.marketplace.providers.gcp import GcpOfferSource

        return GcpOfferSource(regions=regions)
    if name == "azure":
        from loomos.marketplace.providers.azure import AzureOfferSource

        return AzureOfferSource(regions=regions)
    raise MarketInputError(f"unknown cloud provider {name!r}; expected one of {', '.join(CLOUD_PROVIDERS)}")
