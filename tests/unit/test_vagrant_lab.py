"""The Vagrant lab's files agree with each other and with the CLI they call.

No box can be downloaded here, so what can be checked is checked: the Vagrantfile
parses (ruby -c) and validates (vagrant validate, where vagrant is installed); its
machines are the lab file's; the provisioning script and the systemd units call
commands and read settings that exist.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from netlab.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
VAGRANTFILE = ROOT / "Vagrantfile"
PROVISION = ROOT / "scripts" / "provision"
UNITS = ROOT / "scripts" / "systemd"
LAB_FILE = ROOT / "topologies" / "vagrant.yaml"


def test_vagrantfile_is_valid_ruby():
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed")
    result = subprocess.run(["ruby", "-c", str(VAGRANTFILE)], capture_output=True, text=True)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stderr


def test_vagrant_validate_passes(tmp_path):
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (apt-get install vagrant)")
    result = subprocess.run(["vagrant", "validate"], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path),
                                 "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot")}, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_vagrant_machines_are_the_lab_files_nodes_on_debian_12_with_both_providers():
    text = VAGRANTFILE.read_text()
    assert re.search(r'BOX = "debian/bookworm64"', text)
    assert 'provider "virtualbox"' in text and 'provider "libvirt"' in text
    machines = re.findall(r'\{ name: "([\w-]+)", ip: ([\w"._]+), role: "([\w-]+)"', text)
    control_ip = re.search(r'CONTROL_PLANE_IP = "([\d.]+)"', text).group(1)
    vagrant = {name: (control_ip if ip == "CONTROL_PLANE_IP" else ip.strip('"'), role)
               for name, ip, role in machines}
    lab = yaml.safe_load(LAB_FILE.read_text())
    assert vagrant == {n["name"]: (n["address"], n["role"]) for n in lab["nodes"]}
    assert 'vm.network "private_network", ip: node[:ip]' in text
    assert 'path: "scripts/provision"' in text and '"topologies/vagrant.yaml"' in text


def _units() -> dict[str, configparser.ConfigParser]:
    units = {}
    for path in sorted(UNITS.glob("*.service")):
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.optionxform = str  # type: ignore[assignment, method-assign]
        parser.read(path)
        units[path.stem] = parser
    return units


def test_every_unit_runs_a_visible_knetlab_command_whose_settings_the_env_file_gives():
    env_written = set(re.findall(r"^(KNETLAB_\w+)=", PROVISION.read_text(), re.MULTILINE))
    units = _units()
    assert set(units) == {"knetlab-etcd", "knetlab-control-plane", "knetlab-runtime",
                          "knetlab-agent"}
    for name, unit in units.items():
        argv = unit["Service"]["ExecStart"].split()
        assert argv[0] == "/usr/local/bin/knetlab"
        command = main.commands[argv[1]]
        assert not command.hidden, f"{name}: {argv[1]} is hidden"
        assert unit["Service"]["EnvironmentFile"] == "/etc/knetlab/knetlab.env"
        envvars = {p.envvar for p in command.params if isinstance(p, click.Option) and p.envvar}
        # Required options the unit does not pass must come from the env file.
        for param in command.params:
            if isinstance(param, click.Option) and param.required and \
                    not set(param.opts) & set(argv):
                assert param.envvar in env_written, f"{name}: {param.opts[0]} unset"
        assert envvars & env_written, f"{name} reads nothing of /etc/knetlab/knetlab.env"
    assert units["knetlab-agent"]["Unit"]["Wants"].split()[0] == "knetlab-runtime.service"


def test_provision_installs_each_unit_it_starts():
    text = PROVISION.read_text()
    named = set(re.findall(r"\bknetlab-(?:etcd|control-plane|runtime|agent)\b", text))
    assert set(_units()) == named


def test_provision_is_valid_bash_and_refuses_missing_settings_before_doing_anything():
    assert subprocess.run(["bash", "-n", str(PROVISION)]).returncode == 0
    shown = subprocess.run([str(PROVISION), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--no-systemd" in shown.stdout
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        return  # the checks below come after the root check
    result = subprocess.run([str(PROVISION), "--node", "worker-1"], capture_output=True,
                            text=True)
    assert result.returncode == 1 and "--role control-plane|worker is required" in result.stderr
