"""A Host for the provisioning unit tests: the real inventory's `local` environment on Debian 12."""

from __future__ import annotations

import dataclasses

from opskit.provision import distros
from opskit.provision.item import Host

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeployKeyOfThisCheckout opskit@test"


def make_host(env, in_container: bool = True, **settings) -> Host:
    provision = dataclasses.replace(env.provision, **settings)
    return Host(provision, dataclasses.replace(env, provision=provision), distros.DISTROS[provision.distribution],
                in_container, (), (KEY,))
