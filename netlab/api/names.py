"""Name and label syntax checks, worded as the Kubernetes API server words them.

Each check returns a list of problems (empty when the value is fine), the way
apimachinery's `validation.IsDNS1123Label` does, so callers can prefix them with
"Invalid value" and the field path. People paste these messages into search
engines; keeping the API server's wording makes the answers they find apply.
"""

from __future__ import annotations

import re

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63
IANA_SVC_NAME_MAX = 15

_DNS1123_LABEL_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = rf"{_DNS1123_LABEL_FMT}(\.{_DNS1123_LABEL_FMT})*"
_DNS1035_LABEL_FMT = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME_FMT = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE_FMT = rf"({_QUALIFIED_NAME_FMT})?"

_DNS1123_LABEL = re.compile(rf"^{_DNS1123_LABEL_FMT}$")
_DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_SUBDOMAIN_FMT}$")
_DNS1035_LABEL = re.compile(rf"^{_DNS1035_LABEL_FMT}$")
_QUALIFIED_NAME = re.compile(rf"^{_QUALIFIED_NAME_FMT}$")
_LABEL_VALUE = re.compile(rf"^{_LABEL_VALUE_FMT}$")
_IANA_SVC_NAME = re.compile(r"^[-a-z0-9]+$")
_HAS_LETTER = re.compile(r"[a-z]")


def _too_long(limit: int) -> str:
    return f"must be no more than {limit} characters"


def dns1123_label(value: str, limit: int = DNS1123_LABEL_MAX) -> list[str]:
    """Namespace names, container names, lab and node names (these with a smaller limit)."""
    problems = []
    if len(value) > limit:
        problems.append(_too_long(limit))
    if not _DNS1123_LABEL.match(value):
        problems.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
            "or '-', and must start and end with an alphanumeric character (e.g. 'my-name', "
            f"or '123-abc', regex used for validation is '{_DNS1123_LABEL_FMT}')")
    return problems


def dns1123_subdomain(value: str) -> list[str]:
    """Pod, Deployment and Node names, and the Service's externalName."""
    problems = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        problems.append(_too_long(DNS1123_SUBDOMAIN_MAX))
    if not _DNS1123_SUBDOMAIN.match(value):
        problems.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character (e.g. "
            f"'example.com', regex used for validation is '{_DNS1123_SUBDOMAIN_FMT}')")
    return problems


def dns1035_label(value: str) -> list[str]:
    """Service names: a DNS label that starts with a letter, since it becomes a DNS name
    and an environment variable prefix."""
    problems = []
    if len(value) > DNS1123_LABEL_MAX:
        problems.append(_too_long(DNS1123_LABEL_MAX))
    if not _DNS1035_LABEL.match(value):
        problems.append(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
            "with an alphabetic character, and end with an alphanumeric character (e.g. "
            f"'my-name', or 'abc-123', regex used for validation is '{_DNS1035_LABEL_FMT}')")
    return problems


def qualified_name(value: str) -> list[str]:
    """Label keys and annotation keys: an optional DNS subdomain prefix, '/', a name."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        problems = []
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            problems = ["prefix part must be non-empty"]
        else:
            problems = [f"prefix part {p}" for p in dns1123_subdomain(prefix)]
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or "
            f"'123-abc', regex used for validation is '{_QUALIFIED_NAME_FMT}') with an optional "
            "DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        problems.append("name part must be non-empty")
    else:
        if len(name) > QUALIFIED_NAME_MAX:
            problems.append(f"name part {_too_long(QUALIFIED_NAME_MAX)}")
        if not _QUALIFIED_NAME.match(name):
            problems.append(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                "start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or "
                f"'123-abc', regex used for validation is '{_QUALIFIED_NAME_FMT}')")
    return problems


def label_value(value: str) -> list[str]:
    """Label values: empty, or up to 63 characters of a qualified-name shape."""
    problems = []
    if len(value) > LABEL_VALUE_MAX:
        problems.append(_too_long(LABEL_VALUE_MAX))
    if not _LABEL_VALUE.match(value):
        problems.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', "
            "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', "
            f"or 'my_value', or '12345', regex used for validation is '{_LABEL_VALUE_FMT}')")
    return problems


def port_name(value: str) -> list[str]:
    """IANA_SVC_NAME (RFC 6335): container and Service port names, named targetPorts."""
    problems = []
    if len(value) > IANA_SVC_NAME_MAX:
        problems.append(_too_long(IANA_SVC_NAME_MAX))
    if not _IANA_SVC_NAME.match(value):
        problems.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in value:
        problems.append("must not contain consecutive hyphens")
    if not _HAS_LETTER.search(value):
        problems.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        problems.append("must not begin or end with a hyphen")
    return problems
