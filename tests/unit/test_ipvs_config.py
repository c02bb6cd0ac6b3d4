"""IPVS mode in the lab file: `proxy: {mode: ipvs, ipvs: {scheduler: …}}` reaches the agent."""

from __future__ import annotations

import pytest

from netlab.errors import LabFileError
from netlab.lab.labfile import lab_from_data
from netlab.lab.plan import cluster_config


def test_the_scheduler_is_rr_unless_the_lab_file_names_another():
    assert cluster_config(lab_from_data({"name": "x", "proxy": {"mode": "ipvs"}}),
                          "x").ipvs_scheduler == "rr"
    lab = lab_from_data({"name": "x", "proxy": {"mode": "ipvs", "ipvs": {"scheduler": "lc"}}})
    config = cluster_config(lab, "x")
    assert (config.proxy_mode, config.ipvs_scheduler) == ("ipvs", "lc")


def test_an_unknown_scheduler_names_the_field_and_the_choices():
    with pytest.raises(LabFileError, match=r"proxy\.ipvs\.scheduler.*'rr'.*'mh'"):
        lab_from_data({"name": "x", "proxy": {"ipvs": {"scheduler": "fastest"}}})
