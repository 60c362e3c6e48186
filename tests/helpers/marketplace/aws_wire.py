"""AWS answered at the HTTP layer: a botocore `before-send` handler (the hook moto and the
Stubber use) that replies with the bytes the Price List and EC2 APIs send, so botocore's own
signing, serialisation and response parsers run. Installed in `BUILTIN_HANDLERS`, it reaches
every session, including the ones `loomos market refresh` creates through boto3's usual chain.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse

from tests.helpers.marketplace.aws_responses import price_list_item

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"


class _Raw(io.BytesIO):
    """What AWSResponse reads its body from (urllib3's response offers `stream`)."""

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        chunk = self.read()
        while chunk:
            yield chunk
            chunk = self.read()


@dataclass
class AwsRegionData:
    on_demand: dict[str, str]  # instance type -> USD/h as the Price List writes it
    specs: dict[str, tuple[str, int, int, int, int]]  # type -> (gpu, count, gpu MiB, vCPUs, MiB)
    spot: list[tuple[str, str, str]] = field(default_factory=list)  # (type, zone, USD/h)


@dataclass
class AwsWire:
    regions: dict[str, AwsRegionData]
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (service, action, auth header)

    def handle(self, request: AWSPreparedRequest, **kwargs: Any) -> AWSResponse | None:
        host = request.url.split("/")[2]
        body = request.body or b""
        text = body.decode() if isinstance(body, bytes) else str(body)
        auth = _header(request, "Authorization")
        if host.startswith("api.pricing."):
            target = _header(request, "X-Amz-Target")
            self.calls.append(("pricing", target.rsplit(".", 1)[-1], auth))
            return self._pricing(request, json.loads(text))
        if host.startswith("ec2."):
            region = host.split(".")[1]
            form = parse_qs(text)
            action = form["Action"][0]
            self.calls.append(("ec2", action, auth))
            return self._ec2(request, region, action, form)
        return None

    def _pricing(self, request: AWSPreparedRequest, body: dict[str, Any]) -> AWSResponse:
        region = next(f["Value"] for f in body["Filters"] if f["Field"] == "regionCode")
        data = self.regions.get(region)
        items = [price_list_item(t, usd, region) for t, usd in (data.on_demand.items() if data else [])]
        payload = json.dumps({"FormatVersion": "aws_v1", "PriceList": items}).encode()
        return _response(request, payload, "application/x-amz-json-1.1")

    def _ec2(
        self, request: AWSPreparedRequest, region: str, action: str, form: dict[str, list[str]]
    ) -> AWSResponse:
        data = self.regions.get(region) or AwsRegionData({}, {})
        wanted = {v for k, vs in form.items() if k.startswith("InstanceType.") for v in vs}
        if action == "DescribeInstanceTypes":
            items = "".join(
                _instance_type_xml(name, *spec) for name, spec in sorted(data.specs.items()) if name in wanted
            )
            xml = f"<instanceTypeSet>{items}</instanceTypeSet>"
        elif action == "DescribeSpotPriceHistory":
            items = "".join(
                "<item>"
                f"<instanceType>{escape(t)}</instanceType><productDescription>Linux/UNIX</productDescription>"
                f"<spotPrice>{escape(p)}</spotPrice><timestamp>2026-01-15T11:00:00.000Z</timestamp>"
                f"<availabilityZone>{escape(z)}</availabilityZone>"
                "</item>"
                for t, z, p in data.spot
                if t in wanted
            )
            xml = f"<spotPriceHistorySet>{items}</spotPriceHistorySet><nextToken></nextToken>"
        else:
            raise AssertionError(f"unexpected EC2 action {action}")
        payload = (
            f'<?xml version="1.0" encoding="UTF-8"?><{action}Response xmlns="{EC2_NS}">'
            f"<requestId>11111111-2222-3333-4444-555555555555</requestId>{xml}</{action}Response>"
        ).encode()
        return _response(request, payload, "text/xml;charset=UTF-8")


def _header(request: AWSPreparedRequest, name: str) -> str:
    value = request.headers.get(name, "")
    return value.decode() if isinstance(value, bytes) else str(value)


def _instance_type_xml(name: str, gpu: str, count: int, gpu_mib: int, vcpus: int, mib: int) -> str:
    return (
        f"<item><instanceType>{escape(name)}</instanceType><currentGeneration>true</currentGeneration>"
        f"<vCpuInfo><defaultVCpus>{vcpus}</defaultVCpus></vCpuInfo>"
        f"<memoryInfo><sizeInMiB>{mib}</sizeInMiB></memoryInfo>"
        f"<gpuInfo><gpus><item><name>{escape(gpu)}</name><manufacturer>NVIDIA</manufacturer>"
        f"<count>{count}</count><memoryInfo><sizeInMiB>{gpu_mib}</sizeInMiB></memoryInfo></item></gpus>"
        f"<totalGpuMemoryInMiB>{gpu_mib * count}</totalGpuMemoryInMiB></gpuInfo></item>"
    )


def _response(request: AWSPreparedRequest, payload: bytes, content_type: str) -> AWSResponse:
    headers = {"Content-Type": content_type, "Content-Length": str(len(payload))}
    return AWSResponse(request.url, 200, headers, _Raw(payload))


def install(monkeypatch: pytest.MonkeyPatch, wire: AwsWire) -> None:
    """Route every botocore session created from now on (until the test ends) to `wire`."""
    import botocore.handlers

    monkeypatch.setattr(
        botocore.handlers,
        "BUILTIN_HANDLERS",
        [*botocore.handlers.BUILTIN_HANDLERS, ("before-send", wire.handle)],
    )
