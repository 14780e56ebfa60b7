"""actors/settings.py's GatewaySettings (what the actors read, typed) and
gateway.settings.Settings (what the processes are given) agree."""

import dataclasses
import types
import typing

import pytest

from actors.settings import GatewaySettings
from gateway.settings import Settings

MEMBERS = sorted(name for name, value in vars(GatewaySettings).items() if isinstance(value, property))
FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def expected(name):
    return typing.get_type_hints(getattr(GatewaySettings, name).fget)["return"]


@pytest.mark.parametrize("name", MEMBERS)
def test_settings_has_every_member_of_the_same_type(name):
    if name in FIELDS:
        got = typing.get_type_hints(Settings)[name]
    else:
        member = getattr(Settings, name)
        assert isinstance(member, property), f"Settings.{name} is missing"
        got = typing.get_type_hints(member.fget)["return"]
    assert got == expected(name)


def test_the_actors_read_a_real_settings_object_as_typed():
    s = Settings()
    for name in MEMBERS:
        value = getattr(s, name)
        hint = expected(name)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        allowed = typing.get_args(hint) if union else (hint,)
        assert isinstance(value, tuple(typing.get_origin(a) or a for a in allowed)), name
