"""The bounded fault campaign: SIGKILLs, SIGTERM, a broker crash that keeps its data and a
network cut while a stream with re-deliveries and a fuzz corpus is tailed by two processes.

``make soak`` runs the long form (tests/faults/campaign.py --soak).
"""

from __future__ import annotations

from tests.faults.campaign import Plan, run_campaign


def test_bounded_fault_campaign(registry, tmp_path):
    report = run_campaign(Plan(), tmp_path / "campaign", registry, log=lambda *_: None)
    failures = report.failures()
    assert failures == [], "\n".join([str(report.summary()), *failures])
    assert report.decided == report.valid
    assert report.dead_letters >= report.bad
    assert report.produced > report.valid  # re-deliveries and bad records went through too
