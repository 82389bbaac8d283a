"""Bad input gets a clear error naming the problem; the CLI exits 2 without a traceback."""

from __future__ import annotations

import argparse

import pytest

from cadence.plan import cli
from cadence.plan.cluster import load_cluster, parse_cluster
from cadence.plan.errors import PlanError
from cadence.plan.model import get_model
from cadence.plan.planner import check_fits
from cadence.plan.throughput import ThroughputModel


def test_shipped_clusters_match_the_paper() -> None:
    c24 = load_cluster("helix-24")
    assert sorted(n.label for n in c24.nodes).count("T4") == 12 and len(c24.nodes) == 24
    geo = load_cluster("helix-24-geo")
    assert len({n.region for n in geo.nodes}) == 3
    c42 = load_cluster("helix-42")
    labels = [n.label for n in c42.nodes]
    assert len(c42.nodes) == 42 and labels.count("4xT4") == 4 and labels.count("2xL4") == 4


def test_unknown_gpu_is_named() -> None:
    with pytest.raises(PlanError, match="unknown GPU type 'B300'"):
        parse_cluster({"nodes": [{"gpu": "B300"}]})


def test_disconnected_cluster_is_named() -> None:
    data = {"nodes": [{"name": "a", "gpu": "A100"}, {"name": "b", "gpu": "L4", "region": "far"}],
            "region_links": [{"regions": ["default", "far"], "bandwidth_gbps": 0}]}
    with pytest.raises(PlanError, match="disconnected: b"):
        parse_cluster(data)


def test_model_that_fits_nowhere() -> None:
    cluster = parse_cluster({"nodes": [{"gpu": "T4"}]})
    with pytest.raises(PlanError, match="fits nowhere"):
        check_fits(cluster, ThroughputModel(get_model("llama2-70b")))


def test_malformed_file_exits_2(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [gpu: A100\n")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args([str(bad)])) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_cli_end_to_end_small(tmp_path, capsys) -> None:
    cluster = tmp_path / "small.yaml"
    cluster.write_text("nodes:\n  - {name: a, gpu: A100, replicas: 2}\n  - {name: l, gpu: L4, replicas: 2}\n")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    png, js = tmp_path / "f.png", tmp_path / "f.json"
    args = parser.parse_args([str(cluster), "--model", "llama3-8b", "--time-limit-s", "5", "--duration-s", "20",
                              "--warmup-s", "5", "--select-sim-s", "20", "--png", str(png), "--json", str(js)])
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "Helix MILP" in out and "separate" in out
    assert png.stat().st_size > 0 and js.stat().st_size > 0
