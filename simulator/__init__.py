"""Simulated ESP32 devices for `gateway simulate`, the demo and the tests.

* `FleetConfig`, `parse_fleet`, `build_devices` — what to simulate;
* `Fleet`, `run_fleet` — run it over real MQTT connections from one thread;
* `V1Device` (v1 protocol), `Fw22Relay`, `Fw22Display` (firmware 2.2) — the
  devices themselves, plain objects that take the time as an argument.
"""

from simulator.fleet import DEFAULT_FLEET, KINDS, FleetConfig, build_devices, is_loopback, parse_fleet
from simulator.fw22 import FW22_KINDS, Fw22Display, Fw22Options, Fw22Relay, fw22_uuid
from simulator.runner import Fleet, run_fleet
from simulator.v1 import V1_KINDS, V1Device, V1Options

__all__ = [
    "DEFAULT_FLEET",
    "FW22_KINDS",
    "KINDS",
    "V1_KINDS",
    "Fleet",
    "FleetConfig",
    "Fw22Display",
    "Fw22Options",
    "Fw22Relay",
    "V1Device",
    "V1Options",
    "build_devices",
    "fw22_uuid",
    "is_loopback",
    "parse_fleet",
    "run_fleet",
]
