"""The harness itself: systemd boots as PID 1 and applies a unit's sandbox for real."""

from __future__ import annotations

import pytest

from tests.system.container import Container

pytestmark = pytest.mark.system

NOTIFY_PY = "import socket,os; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); " \
            "a=os.environ['NOTIFY_SOCKET']; s.connect('\\0'+a[1:] if a[0]=='@' else a); " \
            "s.send(b'READY=1'); import time; time.sleep(600)"


def test_systemd_is_pid1_and_the_system_is_running(container: Container) -> None:
    assert container.run("cat /proc/1/comm").stdout.strip() == "systemd"
    state = container.run("systemctl is-system-running", check=False).stdout.strip()
    assert state in ("running", "degraded")


def test_notify_service_reaches_active_and_its_sandbox_has_no_ip_network(
        container: Container) -> None:
    container.run(["systemd-run", "--unit=smoke-notify", "-p", "Type=notify",
                   "-p", "DynamicUser=yes", "-p", "PrivateNetwork=yes",
                   "-p", "RestrictAddressFamilies=AF_UNIX", "/usr/bin/python3", "-c", NOTIFY_PY])
    assert container.show("smoke-notify.service", "ActiveState")["ActiveState"] == "active"
    probe = container.run(
        ["systemd-run", "--wait", "--pipe", "-q", "-p", "DynamicUser=yes",
         "-p", "PrivateNetwork=yes", "-p", "RestrictAddressFamilies=AF_UNIX", "/usr/bin/python3",
         "-c", "import socket\ntry:\n socket.socket(socket.AF_INET)\nexcept OSError as e:\n"
               " print('refused', e.errno)"])
    assert probe.stdout.strip() == "refused 97"  # EAFNOSUPPORT
    container.run("systemctl stop smoke-notify.service")
