"""One module per provider behind `base.OfferSource`. Cloud SDKs are imported inside the
functions that use them, so `loomos --help` does not pay for boto3 or the Google clients."""

from __future__ import annotations

from loomos.marketplace.providers.base import OfferSource

CLOUD_PROVIDERS = ("aws", "gcp", "azure")


def make_source(name: str, regions: list[str] | None = None) -> OfferSource:
    """A source for `name` with the SDK's usual credential chain."""
    if name == "aws":
        from loomos.marketplace.providers.aws import AwsOfferSource

        return AwsOfferSource(regions=regions)
    if name == "gcp":
        from loomos.marketplace.providers.gcp import GcpOfferSource

        return GcpOfferSource(regions=regions)
    if name == "azure":
        from loomos.marketplace.providers.azure import AzureOfferSource

        return AzureOfferSource(regions=regions)
    raise ValueError(f"unknown cloud provider {name!r}; expected one of {', '.join(CLOUD_PROVIDERS)}")
