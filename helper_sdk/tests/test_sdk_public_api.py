"""The SDK's public surface is small and pinned: changing it is a deliberate act, seen in review."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution, entry_points

import helper_sdk
import helper_sdk.testing


def test_the_public_names_are_pinned() -> None:
    assert helper_sdk.__all__ == [
        "Helper",
        "HelperError",
        "InvocationContext",
        "Lifecycle",
        "ManifestError",
        "RegistrationError",
        "Unavailable",
        "WebhookVerificationError",
        "__version__",
        "verify_core_signature",
    ]


def test_the_testing_names_are_pinned() -> None:
    assert helper_sdk.testing.__all__ == [
        "FakeCore",
        "HelperClient",
        "InvocationResult",
        "RecordedRequest",
        "RegisteredHelper",
        "new_secret",
        "signed_invocation",
    ]


def test_every_public_name_exists() -> None:
    for module in (helper_sdk, helper_sdk.testing):
        for name in module.__all__:
            assert getattr(module, name) is not None, name


def test_the_distribution_depends_only_on_the_light_six() -> None:
    """jsonschema is the sixth: the manifest's rules are one JSON Schema the core validates with too."""
    dist = distribution("switchboard-helper-sdk")
    requirements = {
        r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in dist.requires or []
    }
    assert requirements == {"flask", "marshmallow", "requests", "standardwebhooks", "gunicorn", "jsonschema"}
    assert dist.version == helper_sdk.__version__


def test_the_cli_is_a_console_script() -> None:
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "switchboard-helper"]
    assert script.value == "helper_sdk._cli:main"


def test_importing_the_sdk_pulls_in_nothing_from_the_core() -> None:
    code = (
        "import sys, helper_sdk, helper_sdk.testing, helper_sdk._cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tasks', 'edge', 'core_worker', 'celery', 'redis', 'kombu'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert result.stdout.strip() == "[]"
