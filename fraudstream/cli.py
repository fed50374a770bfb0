"""``fraudstream simulate | train | replay | backtest | model | retrain | run | alerts | config |
demo``.

Settings come from flags, then the environment (``FRAUDSTREAM_<OPTION>``, and
``FRAUDSTREAM_KAFKA_<OPTION>`` for the Kafka connection), then a TOML file (``--config`` or
``FRAUDSTREAM_CONFIG``), then the defaults; :mod:`fraudstream.settings` reads and validates them
once, and ``fraudstream config show COMMAND`` prints the result. Secrets are never printed.

A failure an operator can act on (:class:`~fraudstream.errors.FraudstreamError`, a Kafka client
error, a missing file) prints one line, ``fraudstream: error: ...``, and exits with status 2; the
detail and traceback go to the log (the JSON record of ``run``; at DEBUG level for the text log of
the other commands). A bug prints ``fraudstream: internal error: ...`` with its traceback and exits
with status 1. A gate refusal exits with status 3, Ctrl-C with 130.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraudstream.errors import (
    BrokerError,
    ConfigError,
    FraudstreamError,
    InputDataError,
)
from fraudstream.settings import (
    Typed,
    add_kafka_options,
    apply,
    comma_list,
    finalize,
    flag_only,
    resolve,
)
from fraudstream.timeutil import format_time_ms, format_window, parse_time_ms, parse_window

if TYPE_CHECKING:
    from fraudstream.kafka import KafkaSettings
    from fraudstream.replay.backtest import AssessmentProtocol

__all__ = ["build_parser", "main"]


def _settings(args: argparse.Namespace) -> KafkaSettings:
    """The Kafka connection of this command (a :class:`ConfigError` without one)."""
    settings = args._settings.kafka()
    assert settings is not None
    return settings


def _maybe_settings(args: argparse.Namespace) -> KafkaSettings | None:
    """Kafka settings when a broker is configured (for ``kafka:TOPIC@FROM..TO`` inputs)."""
    return args._settings.kafka(required=False)


def cmd_simulate(args: argparse.Namespace) -> int:
    from fraudstream.jsonl import write_jsonl
    from fraudstream.simulate import SimConfig, generate

    try:
        config = SimConfig(
            seed=args.seed,
            n_customers=args.customers,
            n_terminals=args.terminals,
            days=args.days,
            drift_at_day=args.drift_at,
            drift_kinds=tuple(args.drift or ()),
        )
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from exc
    sim = generate(config)
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        n = write_jsonl(out / "transactions.jsonl", sim.transactions)
        m = write_jsonl(out / "labels.jsonl", sim.labels)
        write_jsonl(
            out / "truth.jsonl", ({"tx_id": k, "scenario": v} for k, v in sim.fraud.items())
        )
        print(f"wrote {n} transactions, {m} labels, {len(sim.fraud)} frauds to {out}")
    else:
        from fraudstream.kafka import create_topics, produce_streams

        settings = _settings(args)
        create_topics(
            settings, {args.transactions_topic: args.topic_partitions, args.labels_topic: 1}
        )
        stamp: Any = args.stamp or ("now" if args.rate else "event")
        n, m = produce_streams(
            settings,
            args.transactions_topic,
            args.labels_topic,
            sim.transactions,
            sim.labels,
            stamp=stamp,
            rate_per_s=args.rate,
        )
        print(f"produced {n} transactions and {m} labels (timestamps: {stamp})")
    return 0


def _window(
    args: argparse.Namespace, from_attr: str, to_attr: str, flags: str
) -> tuple[int | None, int | None]:
    """Parse a ``[from, to)`` flag pair (see :mod:`fraudstream.timeutil`); errors name the flags."""
    try:
        return parse_window(getattr(args, from_attr), getattr(args, to_attr))
    except ValueError as exc:
        raise ConfigError(f"{flags}: {exc}") from exc


def _required_window(args: argparse.Namespace) -> tuple[int, int]:
    from_ms, to_ms = _window(args, "from_", "to", "--from/--to")
    if from_ms is None or to_ms is None:  # the settings require both; kept for direct callers
        raise ConfigError("--from and --to are both required")
    return from_ms, to_ms


def _say_window(what: str, from_ms: int | None, to_ms: int | None) -> None:
    # stderr, like the progress bars: stdout stays the command's result (train prints the version)
    print(f"{what} {format_window(from_ms, to_ms)}", file=sys.stderr)


def _actor(args: argparse.Namespace) -> str:
    from fraudstream.models.registry import default_actor

    return args.actor or default_actor()


def cmd_train(args: argparse.Namespace) -> int:
    from fraudstream.models.registry import ModelRegistry
    from fraudstream.replay.training import bootstrap_stage, train_from_files

    train_from_ms, train_to_ms = _window(args, "train_from", "train_to", "--train-from/--train-to")
    _say_window("training window", train_from_ms, train_to_ms)
    registry = ModelRegistry(args.registry)
    if args.force and not args.reason:
        raise ConfigError("--force needs --reason (it is written to the stage log)")
    if args.stage in ("canary", "production") and registry.versions() and not args.force:
        raise ConfigError(
            f"--stage {args.stage}: the registry already holds models; promote through the gate "
            "(fraudstream model promote) or add --force with --reason"
        )
    stage = (args.stage or "shadow") if args.challenger else bootstrap_stage(registry, args.stage)
    reason = args.reason
    if reason and args.force:
        reason = f"forced at training: {reason}"
    version = train_from_files(
        transactions=args.transactions,
        labels=args.labels,
        kafka=_maybe_settings(args),
        feature_set=args.feature_set,
        registry=Path(args.registry),
        seed=args.seed,
        n_estimators=args.n_estimators,
        train_from_ms=train_from_ms,
        train_to_ms=train_to_ms,
        challenger=args.challenger,
        stage=stage,
        actor=_actor(args),
        reason=reason,
    )
    print(
        f"registered {version} ({registry.kind_of(version)}) in {registry.stage_of(version)}",
        file=sys.stderr,
    )
    print(version)
    return 0


def cmd_replay_features(args: argparse.Namespace) -> int:
    from fraudstream.replay.api import write_features

    n = write_features(
        args.transactions, args.labels, args.feature_set, args.out, _maybe_settings(args)
    )
    print(f"wrote {n} rows of {args.feature_set!r} features to {args.out}")
    return 0


def cmd_replay_training_set(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from fraudstream.replay.api import read_records
    from fraudstream.replay.training_set import training_set

    table = training_set(
        read_records(args.decisions, _maybe_settings(args)),
        read_records(args.labels, _maybe_settings(args)),
        as_of_ms=parse_time_ms(args.as_of),
        maturity_ms=int(args.maturity_days * 86_400_000),
    )
    pq.write_table(table, args.out, compression="zstd", store_schema=False)
    positives = sum(table.column("label").to_pylist())
    print(f"wrote {table.num_rows} rows ({positives} fraud) to {args.out}")
    return 0


def cmd_replay_archive(args: argparse.Namespace) -> int:
    from fraudstream.replay.archive import archive_topic

    from_ms, to_ms = _required_window(args)
    _say_window("archive window", from_ms, to_ms)
    n = archive_topic(_settings(args), args.topic, from_ms=from_ms, to_ms=to_ms, out=Path(args.out))
    print(f"archived {n} records of {args.topic!r} to {args.out}")
    return 0


def _backtest_protocol(
    args: argparse.Namespace, registry: Path, version: str | None
) -> AssessmentProtocol:
    from fraudstream.models.registry import ModelRegistry
    from fraudstream.replay.backtest import HANDBOOK_DELAY_DAYS, HandbookProtocol, StrictProtocol

    if args.k < 1:
        raise ConfigError(f"--k: must be >= 1, got {args.k}")
    train_from_ms, train_to_ms = _window(args, "train_from", "train_to", "--train-from/--train-to")
    if args.protocol == "strict":
        handbook_only = {
            "--train-from": args.train_from,
            "--train-to": args.train_to,
            "--delay-days": args.delay_days,
        }
        given = [flag for flag, value in handbook_only.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: only for --protocol handbook")
        print(
            "strict protocol: cards with a fraud label issued before the test day are left out; "
            f"k {args.k}",
            file=sys.stderr,
        )
        return StrictProtocol()
    delay_days = HANDBOOK_DELAY_DAYS if args.delay_days is None else args.delay_days
    if delay_days < 0:
        raise ConfigError(f"--delay-days: must be >= 0, got {delay_days}")
    manifest = ModelRegistry(registry).load(version).manifest
    protocol = HandbookProtocol.for_model(
        manifest, train_from_ms=train_from_ms, train_to_ms=train_to_ms, delay_days=delay_days
    )
    print(
        f"handbook protocol: training window "
        f"{format_window(protocol.train_from_ms, protocol.train_to_ms)} "
        f"({protocol.train_window_source}), feedback delay {delay_days} days, k {args.k}",
        file=sys.stderr,
    )
    return protocol


def cmd_backtest(args: argparse.Namespace) -> int:
    from fraudstream.models.registry import parse_model_ref
    from fraudstream.replay.api import read_records
    from fraudstream.replay.backtest import backtest, write_report

    registry, version = parse_model_ref(args.model)
    from_ms, to_ms = _required_window(args)
    _say_window("test window", from_ms, to_ms)
    protocol = _backtest_protocol(args, registry, version)
    result = backtest(
        read_records(args.transactions, _maybe_settings(args)),
        read_records(args.labels, _maybe_settings(args)),
        registry=registry,
        version=version,
        from_ms=from_ms,
        to_ms=to_ms,
        k=args.k,
        protocol=protocol,
        logged_decisions=(
            read_records(args.compare_decisions, _maybe_settings(args))
            if args.compare_decisions
            else None
        ),
        challenger=_version_arg(args.challenger, "--challenger") if args.challenger else None,
    )
    write_report(result, Path(args.report))
    m = result.metrics
    print(
        f"{m['model_version']} ({m['protocol']['name']} protocol): "
        f"{m['transactions']} transactions, AUC {m['auc_roc']}, "
        f"AP {m['average_precision']}, CP@{args.k} {m[f'card_precision_at_{args.k}']:.3f}; "
        f"report in {args.report}"
    )
    if "challenger" in m:
        c = m["challenger"]
        print(
            f"challenger {c['version']} ({c['scoring']}, same transactions): AUC {c['auc_roc']}, "
            f"AP {c['average_precision']}, CP@{args.k} {c[f'card_precision_at_{args.k}']:.3f}, "
            f"recall at its review threshold {c['recall_at_threshold']}"
        )
    return 0


def _version_arg(text: str, flag: str) -> str:
    from fraudstream.models.registry import parse_version

    try:
        return parse_version(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from exc


def _policy(args: argparse.Namespace) -> Any:
    from fraudstream.models.lifecycle import GatePolicy

    try:
        return GatePolicy(max_fpr=args.max_fpr, max_cost_us=args.max_cost_us)
    except ValueError as exc:
        raise ConfigError(f"--max-fpr/--max-cost-us: {exc}") from exc


def cmd_model_list(args: argparse.Namespace) -> int:
    from fraudstream.models.registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    stages = registry.stages()
    versions = registry.versions(args.stage, args.kind)
    if not versions:
        print(f"no models in {args.registry}" + (f" in stage {args.stage}" if args.stage else ""))
        return 0
    header = (
        "VERSION",
        "KIND",
        "STAGE",
        "CREATED",
        "FEATURES",
        "REVIEW",
        "DECLINE",
        "AUC",
        "TRAINED ON",
    )
    rows = [header]
    for version in versions:
        m = registry.manifest(version)
        window = m.get("training_window") or {}
        auc = (m.get("metrics") or {}).get("auc_roc")
        fs = m["feature_set"]
        rows.append(
            (
                version,
                m["kind"],
                stages.get(version, "-"),
                str(m.get("created_at", "?"))[:19].replace("T", " "),
                f"{fs['name']} v{fs['version']}",
                f"{m['thresholds']['review']:.4g}",
                f"{m['thresholds']['decline']:.4g}",
                "-" if auc is None else f"{auc:.3f}",
                f"{format_time_ms(window['from_ms'])[:10]}..{format_time_ms(window['to_ms'])[:10]}"
                if window.get("from_ms") is not None and window.get("to_ms") is not None
                else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_model_history(args: argparse.Namespace) -> int:
    from fraudstream.models.registry import ModelRegistry

    version = _version_arg(args.version, "--version") if args.version else None
    records = ModelRegistry(args.registry).history(version)
    if not records:
        print(f"no stage changes in {args.registry}")
    for r in records:
        print(
            f"{r.at}  {r.version}  {r.from_stage or 'registered'} -> {r.to_stage}  "
            f"by {r.actor}: {r.reason}"
        )
    return 0


def _print_changes(changes: list[Any]) -> None:
    for c in changes:
        print(f"{c.version}: {c.from_stage or 'registered'} -> {c.to_stage}")


def cmd_model_promote(args: argparse.Namespace) -> int:
    import json

    from fraudstream.models.lifecycle import DAY_MS
    from fraudstream.models.registry import ModelRegistry
    from fraudstream.replay.api import read_records
    from fraudstream.replay.evaluation import evaluate_promotion, parse_records

    registry = ModelRegistry(args.registry)
    version = _version_arg(args.version, "VERSION")
    if args.force and not args.reason:
        raise ConfigError("--force needs --reason (it is written to the stage log)")
    if bool(args.transactions) != bool(args.labels):
        raise ConfigError("--transactions and --labels go together")
    policy = _policy(args)
    eval_from, eval_to = _window(args, "eval_from", "eval_to", "--eval-from/--eval-to")
    if (eval_from is None) != (eval_to is None):
        raise ConfigError("--eval-from and --eval-to go together")
    if not args.transactions:
        if not args.force:
            raise ConfigError(
                "the gate backtests the candidate against production over matured labels: give "
                "--transactions and --labels, or --force with --reason to promote without it"
            )
        changes = registry.set_stage(
            version,
            args.to,
            reason=f"forced without evaluation: {args.reason}",
            actor=_actor(args),
        )
        _print_changes(changes)
        return 0
    settings = _maybe_settings(args)
    txs, labs = parse_records(
        read_records(args.transactions, settings), read_records(args.labels, settings)
    )
    decision = evaluate_promotion(
        registry,
        version,
        args.to,
        txs,
        labs,
        policy=policy,
        maturity_ms=int(args.maturity_days * DAY_MS),
        eval_days=args.eval_days,
        as_of_ms=parse_time_ms(args.as_of) if args.as_of else None,
        window=None if eval_from is None or eval_to is None else (eval_from, eval_to),
    )
    c = decision.candidate
    _say_window("evaluation window", c.window_from_ms, c.window_to_ms)
    for check in decision.checks:
        print(f"  [{'ok' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
    if args.summary:
        Path(args.summary).write_text(json.dumps(decision.to_json(), indent=2, sort_keys=True))
    if decision.accepted:
        reason = decision.summary() + (f"; {args.reason}" if args.reason else "")
    elif args.force:
        reason = f"forced: {args.reason}; {decision.summary()}"
    else:
        print(f"fraudstream: refused: {decision.summary()}", file=sys.stderr)
        return 3
    _print_changes(registry.set_stage(version, args.to, reason=reason, actor=_actor(args)))
    return 0


def cmd_model_demote(args: argparse.Namespace) -> int:
    from fraudstream.models.registry import ModelRegistry

    version = _version_arg(args.version, "VERSION")
    changes = ModelRegistry(args.registry).set_stage(
        version, args.to, reason=args.reason, actor=_actor(args)
    )
    _print_changes(changes)
    if not changes:
        print(f"{version} is already in {args.to}")
    return 0


def cmd_model_rollback(args: argparse.Namespace) -> int:
    from fraudstream.models.registry import ModelRegistry

    changes = ModelRegistry(args.registry).rollback(reason=args.reason, actor=_actor(args))
    _print_changes(changes)
    return 0


def _retrain_source(spec: str, from_ms: int, to_ms: int) -> str:
    """A ``kafka:TOPIC`` without a window reads the retraining span of the topic."""
    if spec.startswith("kafka:") and "@" not in spec:
        return f"{spec}@{from_ms}..{to_ms}"
    return spec


def cmd_retrain(args: argparse.Namespace) -> int:
    import json
    import time

    from fraudstream.models.lifecycle import DAY_MS
    from fraudstream.replay.api import read_records
    from fraudstream.replay.retrain import RetrainConfig, retrain
    from fraudstream.state.features import get_feature_set

    as_of = parse_time_ms(args.as_of) if args.as_of else None
    kafka = any(s.startswith("kafka:") for s in (args.transactions, args.labels))
    if kafka and as_of is None:
        as_of = int(time.time() * 1000)  # a live topic: now; files: the end of the input
    try:
        cfg = RetrainConfig(
            actor=_actor(args),
            days=args.days,
            maturity_days=args.maturity_days,
            eval_days=args.eval_days,
            as_of_ms=as_of,
            kind="river-logistic" if args.challenger else "xgboost",
            seed=args.seed,
            n_estimators=args.n_estimators,
            promote=args.promote,
            policy=_policy(args),
        )
    except ValueError as exc:
        raise ConfigError(f"retrain: {exc}") from exc
    sources = [args.transactions, args.labels]
    if as_of is not None:
        span = (as_of - int(args.days * DAY_MS), as_of + 1)
        sources = [_retrain_source(s, *span) for s in sources]
    settings = _maybe_settings(args)
    result = retrain(
        read_records(sources[0], settings),
        read_records(sources[1], settings),
        get_feature_set(args.feature_set),
        Path(args.registry),
        cfg,
    )
    text = json.dumps(result.summary, indent=2, sort_keys=True)
    if args.summary:
        Path(args.summary).write_text(text + "\n")
    print(text)
    s = result.summary
    print(
        f"retrain: registered {result.version} ({s['stage']}); evaluation window "
        f"{s['evaluation']['window']}",
        file=sys.stderr,
    )
    for warning in s["warnings"]:
        print(f"retrain: warning: {warning}", file=sys.stderr)
    if result.accepted is False:
        print(f"fraudstream: refused: {s['reason']}", file=sys.stderr)
        return 3
    return 0


def _flow_config(args: argparse.Namespace) -> Any:
    from fraudstream.flows.scoring import FlowConfig, Topics
    from fraudstream.state.features import get_feature_set

    topics = Topics(
        transactions=args.transactions_topic,
        labels=args.labels_topic,
        decisions=args.decisions_topic,
        transactions_dlq=f"{args.transactions_topic}.dlq",
        labels_dlq=f"{args.labels_topic}.dlq",
        alerts=args.alerts_topic,
    )
    return FlowConfig(
        kafka=_settings(args),
        topics=topics,
        feature_set=get_feature_set(args.feature_set),
        model_registry=Path(args.registry),
        model_version=args.model_version,
        state_dir=Path(args.state_dir),
        partitions=args.state_partitions,
        tail=not args.no_tail,
        batch_size=args.batch_size,
        idle_grace_ms=args.idle_grace_ms,
        offset_policy=args.offset_policy,
        max_dead_letter_bytes=args.max_dead_letter_bytes,
        fetch_wait_ms=args.fetch_wait_ms,
        canary_share=args.canary_share,
        model_poll_s=args.model_poll_s,
        drift="auto" if args.drift_detection == "on" else None,
    )


def _run_local_cluster(args: argparse.Namespace) -> int:
    """``--processes N``: N processes of one Bytewax cluster on loopback ports.

    The parent holds the directory locks for the whole cluster (its children inherit them),
    forwards SIGTERM and SIGINT to its children, stops the others when one fails, and kills
    children still running ``--shutdown-timeout-s`` after a stop was asked (a child still
    connecting to the cluster cannot stop gracefully); each child is killed by the kernel if the
    parent dies (no orphans).
    """
    import signal
    import time

    from fraudstream.broker import _death_signal_preexec, free_port
    from fraudstream.flows.run import LOCKS_HELD_ENV, dir_locks, ensure_recovery_dir

    dirs = [Path(args.state_dir)] + ([] if args.no_recovery else [Path(args.recovery_dir)])
    with dir_locks(dirs) as fds:
        if not args.no_recovery:
            ensure_recovery_dir(Path(args.recovery_dir))
        # consecutive ports from one call: separate calls could return the same port twice
        first = free_port("127.0.0.1", count=args.processes)
        addrs = ",".join(f"127.0.0.1:{first + i}" for i in range(args.processes))
        env = {**os.environ, LOCKS_HELD_ENV: "1"}
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fraudstream",
                    *args._argv,
                    "--processes",
                    "1",
                    "-a",
                    addrs,
                    "-i",
                    str(i),
                ],
                env=env,
                pass_fds=fds,
                preexec_fn=_death_signal_preexec(signal.SIGKILL),
            )
            for i in range(args.processes)
        ]

        deadline: list[float] = []

        def forward(signum: int, _frame: Any) -> None:
            if not deadline:
                deadline.append(time.monotonic() + args.shutdown_timeout_s)
            for child in children:
                if child.returncode is None:
                    child.send_signal(signum)

        def on_alarm(_signum: int, _frame: Any) -> None:
            if deadline and time.monotonic() >= deadline[0]:
                for child in children:
                    if child.returncode is None:
                        child.kill()

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 1.0, 1.0)
        codes: list[int] = []
        try:
            _wait_children(children, codes, forward)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)  # a late alarm must not kill the exiting parent
        return max(abs(c) for c in codes) if codes else 1


def _wait_children(children: list[Any], codes: list[int], forward: Any) -> None:
    import signal

    while len(codes) < len(children):
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        code = os.waitstatus_to_exitcode(status)
        for child in children:
            if child.pid == pid:
                child.returncode = code
                codes.append(code)
        if code != 0:
            forward(signal.SIGTERM, None)


def _stop_on_signals() -> None:
    """From the very start of ``run``: SIGTERM/SIGINT request a graceful stop (see
    fraudstream.flows.run.graceful_stop), even before the flow is built."""
    import signal

    from fraudstream.runtime import STOP

    def stop(signum: int, _frame: Any) -> None:
        STOP.set()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def cmd_run(args: argparse.Namespace) -> int:
    if not (args.processes > 1 and not args.addresses):
        _stop_on_signals()
    from fraudstream.flows.run import run_flow
    from fraudstream.metrics import serve_metrics

    if args.processes > 1 and not args.addresses:
        return _run_local_cluster(args)
    recovery = None if args.no_recovery else Path(args.recovery_dir)
    cfg = _flow_config(args)
    import dataclasses

    logging.getLogger("fraudstream.run").info(
        "starting",
        extra={
            "kafka": cfg.kafka.redacted(),
            "topics": dataclasses.asdict(cfg.topics),
            "feature_set": cfg.feature_set.name,
            "state_dir": str(cfg.state_dir),
            "recovery_dir": None if recovery is None else str(recovery),
            "process_id": args.process_id,
            "metrics": f"{args.metrics_addr}:{args.metrics_port}" if args.metrics_port else None,
        },
    )
    if args.metrics_port:
        from fraudstream.health import HEALTH

        HEALTH.stall_timeout_s = args.stall_timeout_s
        serve_metrics(args.metrics_port + args.process_id, args.metrics_addr)
    addresses = args.addresses.split(",") if args.addresses else None
    run_flow(
        cfg,
        recovery_dir=recovery,
        epoch_interval_s=args.epoch_interval,
        addresses=addresses,
        process_id=args.process_id,
        workers_per_process=args.workers,
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fraudstream.demo import run_demo

    return run_demo(
        workdir=Path(args.workdir),
        customers=args.customers,
        history_days=args.history_days,
        stream_days=args.stream_days,
        rate=args.rate,
        drift=None if args.drift == "none" else args.drift,
    )


def cmd_alerts_tail(args: argparse.Namespace) -> int:
    from fraudstream.alerts import tail

    printed = tail(
        _settings(args),
        args.alerts_topic,
        follow=args.follow,
        from_beginning=args.from_beginning,
        out=sys.stdout,
        timeout_s=args.timeout_s,
    )
    print(f"{printed} alerts from {args.alerts_topic!r}", file=sys.stderr)
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    target = list(args.target) or ["run"]
    target_args = build_parser().parse_args(target)
    if args.config and not getattr(target_args, "config", None):
        target_args.config = args.config
    settings = resolve(target_args, check=False)
    print(settings.to_json() if args.format == "json" else settings.to_toml(), end="")
    if args.format == "json":
        print()
    sys.stdout.flush()
    settings.kafka(required=False)  # an inconsistent connection: shown above, then reported
    return 0


_END_HELP = "end (exclusive), ISO or ms; a date-only end includes that whole day"

_BACKTEST_DESCRIPTION = """\
Scores the test period [--from, --to) with the model (features replayed point in time over the
whole input) and writes metrics.json and report.html. Cards a bank would already have blocked are
left out of each test day. --protocol handbook (default) is the protocol of the public handbook
"Reproducible Machine Learning for Credit Card Fraud Detection" (Le Borgne et al.): on test day d,
cards with a fraud in the training window, or on the days after it up to d - delay - 1, are known
compromised; and a fraudulent card in a day's top k is detected and blocked for the later days
(card precision@k). The training window is --train-from/--train-to, by default the window recorded
with the model at training. --protocol strict leaves out cards with a fraud label issued
(label_time_ms) before the test day and blocks no detected card."""


_TRAIN_DESCRIPTION = """\
Replays features point in time over the whole input, trains on the transactions of
[--train-from, --train-to) with the labels known at the end of the input, sets the model's own
review/decline thresholds at 2 % / 0.2 % false-positive rate on its validation scores (the last
20 % of rows in time) and registers it. The champion is XGBoost; --challenger fits the online
River challenger in time order, learning each label once it is due (its validation scores are
prequential). Prints the version on stdout."""

_PROMOTE_DESCRIPTION = """\
The gate: the candidate and the current production model score the same matured transactions
(strict protocol; an online model prequentially). It refuses unless the candidate's recall at its
review threshold is not worse than production's, its false-positive rate at its review threshold
is at most --max-fpr, its scoring cost (µs/row at batch 256) fits --max-cost-us, the window holds
a matured fraud and starts after the candidate's training data. The window is --eval-from and
--eval-to, or else the --eval-days before as-of minus --maturity-days (not before the candidate's
training data ends). --force with --reason overrides a refusal (both are written to the stage
log). Exit status 3 when refused."""

_RETRAIN_DESCRIPTION = """\
The nightly job: takes the last --days of the input (a kafka:TOPIC source without @FROM..TO reads
exactly that span, as of now), trains a candidate on the transactions before the evaluation
window, backtests it and the production model on the same window ([as-of - maturity - eval-days,
as-of - maturity), strict protocol), registers it in shadow and, with --promote, applies the gate
of `fraudstream model promote`. Prints a JSON summary (also --summary PATH); exit status 3 when
the gate refuses."""


_INPUT_HELP = "JSONL(.gz), Parquet, or kafka:TOPIC[@FROM..TO]"


def _common_args(p: argparse.ArgumentParser) -> None:
    """Options every command has: the settings file and the logs."""
    p.add_argument(
        "--config",
        metavar="PATH",
        help="TOML settings file (also FRAUDSTREAM_CONFIG); flags and the environment win over it",
    )
    p.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=None,
        help="logs on stderr: json (default for run) or text (default for the other commands)",
    )
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=None,
        help="lowest level logged (default: INFO)",
    )


def _registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", default="var/registry", help="model registry directory")


def _who_args(p: argparse.ArgumentParser, *, reason_required: bool) -> None:
    flag_only(
        p.add_argument("--reason", required=reason_required, help="why, written to the stage log")
    )
    p.add_argument("--actor", help="who, written to the stage log (default: user:<login>)")


def _gate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--maturity-days",
        type=Typed(float, ge=0),
        default=8.0,
        help="how late labels may come: the evaluation window ends this long before as-of "
        "(default: 8)",
    )
    p.add_argument(
        "--eval-days",
        type=Typed(float, gt=0),
        default=7.0,
        help="length of the evaluation window (default: 7)",
    )
    p.add_argument(
        "--max-fpr",
        type=float,
        default=0.02,
        help="highest false-positive rate at the review threshold (default: 0.02)",
    )
    p.add_argument(
        "--max-cost-us",
        type=float,
        default=25.0,
        help="scoring cost budget, µs per row at batch 256 (default: 25)",
    )
    p.add_argument(
        "--as-of",
        help="as-of time, ISO or ms (default: the end of the input; retrain from Kafka: now)",
    )


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transactions", required=True, help=f"transactions: {_INPUT_HELP}")
    p.add_argument("--labels", required=True, help=f"labels: {_INPUT_HELP}")


def _lifecycle_parsers(subs: Any) -> None:
    """``model list|history|promote|demote|rollback`` and ``retrain``."""
    p = subs.add_parser("model", help="the model registry: list, history, promote, rollback")
    model = p.add_subparsers(dest="model_command", required=True)

    p = model.add_parser("list", help="versions with their kind, stage and thresholds")
    _registry_arg(p)
    p.add_argument(
        "--stage",
        choices=["shadow", "canary", "production", "archived"],
        help="only versions in this stage",
    )
    p.add_argument("--kind", help="only versions of this kind (xgboost, river-logistic)")
    p.set_defaults(func=cmd_model_list)

    p = model.add_parser("history", help="every stage change, oldest first")
    _registry_arg(p)
    p.add_argument("--version", help="only this version's changes")
    p.set_defaults(func=cmd_model_history)

    p = model.add_parser(
        "promote",
        help="move a version to canary or production through the gate",
        description=_PROMOTE_DESCRIPTION,
    )
    p.add_argument("version", metavar="VERSION", help="the candidate (v3, v0003 or 3)")
    flag_only(
        p.add_argument("--to", required=True, choices=["canary", "production"], help="target stage")
    )
    _registry_arg(p)
    p.add_argument("--transactions", help=f"records to backtest on: {_INPUT_HELP} (with --labels)")
    p.add_argument("--labels", help="labels of those records, same forms")
    p.add_argument("--eval-from", help="evaluation window start (inclusive), ISO or ms")
    p.add_argument("--eval-to", help=f"evaluation window {_END_HELP}")
    _gate_args(p)
    flag_only(
        p.add_argument("--force", action="store_true", help="promote even if the gate refuses")
    )
    p.add_argument("--summary", help="write the gate's checks as JSON here")
    _who_args(p, reason_required=False)
    add_kafka_options(p)
    p.set_defaults(func=cmd_model_promote)

    p = model.add_parser("demote", help="move a version to shadow or archived (no gate)")
    p.add_argument("version", metavar="VERSION", help="the version (v3, v0003 or 3)")
    flag_only(
        p.add_argument("--to", required=True, choices=["shadow", "archived"], help="target stage")
    )
    _registry_arg(p)
    _who_args(p, reason_required=True)
    p.set_defaults(func=cmd_model_demote)

    p = model.add_parser("rollback", help="make the previous production version production again")
    _registry_arg(p)
    _who_args(p, reason_required=True)
    p.set_defaults(func=cmd_model_rollback)

    p = subs.add_parser(
        "retrain",
        help="nightly: replay, train a candidate, backtest vs production, register, gate",
        description=_RETRAIN_DESCRIPTION,
    )
    _inputs(p)
    _registry_arg(p)
    p.add_argument("--feature-set", default="default", help="feature set name (default: default)")
    p.add_argument(
        "--days",
        type=Typed(float, gt=0),
        default=30.0,
        help="how many days before as-of to replay (default: 30)",
    )
    _gate_args(p)
    p.add_argument(
        "--challenger", action="store_true", help="train the online River challenger instead"
    )
    p.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    p.add_argument(
        "--n-estimators",
        type=Typed(int, ge=1),
        default=200,
        help="boosting rounds (champion only; default: 200)",
    )
    p.add_argument(
        "--promote",
        choices=["canary", "production"],
        help="apply the gate and move an accepted candidate there",
    )
    p.add_argument("--summary", help="also write the JSON summary here")
    p.add_argument("--actor", help="who, written to the stage log (default: user:<login>)")
    add_kafka_options(p)
    p.set_defaults(func=cmd_retrain)


def _simulate_parser(subs: Any) -> None:
    p = subs.add_parser("simulate", help="generate a seeded stream to JSONL files or Kafka")
    p.add_argument("--seed", type=int, default=42, help="random seed: same seed, same stream")
    p.add_argument(
        "--customers", type=Typed(int, ge=1), default=5000, help="customers (default: 5000)"
    )
    p.add_argument(
        "--terminals", type=Typed(int, ge=1), default=10000, help="terminals (default: 10000)"
    )
    p.add_argument(
        "--days", type=Typed(int, ge=1), default=30, help="days of transactions (default: 30)"
    )
    p.add_argument(
        "--drift-at",
        type=int,
        default=None,
        metavar="DAY",
        help="day (0-based, < --days) from whose start the --drift kinds act; the output before "
        "it is the same as without drift",
    )
    p.add_argument(
        "--drift",
        action="extend",
        type=comma_list,
        default=None,
        metavar="KIND",
        help="drift from --drift-at on, repeatable or comma-separated: amount (legitimate "
        "amounts x2.5), new-pattern (card-testing bursts, ground truth card_testing), label "
        "(half the frauds never charged back, a fifth of reviews say fraud); details in "
        "fraudstream.simulate",
    )
    p.add_argument("--out-dir", help="write JSONL here instead of producing to Kafka")
    p.add_argument(
        "--rate",
        type=Typed(float, gt=0),
        default=None,
        help="events/s when producing (default: as fast as the broker takes them)",
    )
    p.add_argument(
        "--stamp",
        choices=["event", "now"],
        default=None,
        help="Kafka timestamps: each record's own time (a history; default without --rate) "
        "or the producer's clock (a live stream; default with --rate)",
    )
    p.add_argument(
        "--topic-partitions",
        "--partitions",
        type=Typed(int, ge=1),
        default=4,
        help="partitions of the transactions topic if it is created (default: 4); "
        "--partitions and FRAUDSTREAM_PARTITIONS are deprecated names",
    )
    p.add_argument(
        "--transactions-topic", default="transactions", help="topic to produce transactions to"
    )
    p.add_argument("--labels-topic", default="labels", help="topic to produce labels to")
    add_kafka_options(p)
    p.set_defaults(func=cmd_simulate)


def _train_parser(subs: Any) -> None:
    p = subs.add_parser(
        "train",
        help="train the XGBoost champion (or --challenger) by replay and register it",
        description=_TRAIN_DESCRIPTION,
    )
    _inputs(p)
    p.add_argument("--feature-set", default="default", help="feature set name (default: default)")
    _registry_arg(p)
    p.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    p.add_argument(
        "--n-estimators",
        type=Typed(int, ge=1),
        default=200,
        help="boosting rounds (champion only; default: 200)",
    )
    p.add_argument(
        "--challenger",
        action="store_true",
        help="train the online River challenger instead (prequential warm start; shadow)",
    )
    p.add_argument(
        "--stage",
        choices=["shadow", "canary", "production"],
        default=None,
        help="stage to register in; default: shadow, or production for the first model of an "
        "empty registry; canary/production on a non-empty registry need --force",
    )
    flag_only(
        p.add_argument("--force", action="store_true", help="allow --stage canary/production")
    )
    flag_only(
        p.add_argument("--reason", help="why, written to the stage log (required with --force)")
    )
    p.add_argument("--actor", help="who, written to the stage log (default: user:<login>)")
    p.add_argument(
        "--train-from",
        help="start of the training window, inclusive: ISO date/datetime or epoch ms; default: all",
    )
    p.add_argument(
        "--train-to",
        help="end of the training window, exclusive; a date-only end includes that day "
        "(--train-from 2018-07-25 --train-to 2018-07-31 is 7 days); default: all",
    )
    add_kafka_options(p)
    p.set_defaults(func=cmd_train)


def _replay_parsers(subs: Any) -> None:
    p = subs.add_parser("replay", help="point-in-time replays of recorded streams")
    replay = p.add_subparsers(dest="replay_command", required=True)
    p = replay.add_parser("features", help="one feature row per transaction, to Parquet")
    _inputs(p)
    p.add_argument("--feature-set", default="default", help="feature set name (default: default)")
    p.add_argument("--out", required=True, help="output .parquet")
    add_kafka_options(p)
    p.set_defaults(func=cmd_replay_features)

    p = replay.add_parser("archive", help="export a topic time range to Parquet by day")
    p.add_argument("--topic", default="decisions", help="topic to export (default: decisions)")
    p.add_argument("--from", dest="from_", required=True, help="start (inclusive), ISO or ms")
    p.add_argument("--to", required=True, help=_END_HELP)
    p.add_argument("--out", required=True, help="output directory (resumes if it exists)")
    add_kafka_options(p)
    p.set_defaults(func=cmd_replay_archive)

    p = replay.add_parser("training-set", help="decision-time features + labels known at as-of")
    p.add_argument("--decisions", required=True, help="decision records, JSONL(.gz) or Parquet")
    p.add_argument("--labels", required=True, help=f"labels: {_INPUT_HELP}")
    p.add_argument("--as-of", required=True, help="epoch ms or ISO date/datetime (UTC)")
    p.add_argument(
        "--maturity-days",
        type=Typed(float, ge=0),
        default=30.0,
        help="a transaction without a label counts as legitimate once this old (default: 30)",
    )
    p.add_argument("--out", required=True, help="output .parquet")
    add_kafka_options(p)
    p.set_defaults(func=cmd_replay_training_set)


def _backtest_parser(subs: Any) -> None:
    p = subs.add_parser(
        "backtest",
        help="score a test period point in time; metrics + report",
        description=_BACKTEST_DESCRIPTION,
    )
    _inputs(p)
    p.add_argument("--model", required=True, help="REGISTRY_DIR[:VERSION]")
    p.add_argument(
        "--from", dest="from_", required=True, help="test period start (inclusive), ISO or ms"
    )
    p.add_argument("--to", required=True, help=f"test period {_END_HELP}")
    p.add_argument("--k", type=int, default=100, help="cards per day for card precision@k")
    p.add_argument(
        "--protocol",
        choices=["handbook", "strict"],
        default="handbook",
        help="which cards count as known compromised (see above); default: handbook",
    )
    p.add_argument(
        "--train-from",
        help="handbook: training window start, ISO or ms; default: the model's training window",
    )
    p.add_argument(
        "--train-to",
        help="handbook: training window end, exclusive (a date-only end includes that day); "
        "default: the model's training window",
    )
    p.add_argument("--delay-days", type=int, help="handbook: feedback delay in days (default: 7)")
    p.add_argument(
        "--compare-decisions", help="decision log (JSONL/Parquet): compare with the champion"
    )
    p.add_argument(
        "--challenger",
        metavar="VERSION",
        help="a version of the same registry to assess beside the model on the same "
        "transactions; an online model is replayed prequentially",
    )
    p.add_argument("--report", required=True, help="output directory")
    add_kafka_options(p)
    p.set_defaults(func=cmd_backtest)


def _run_parser(subs: Any) -> None:
    p = subs.add_parser("run", help="the sidecar: score transactions from Kafka")
    p.add_argument("--feature-set", default="default", help="feature set name (default: default)")
    _registry_arg(p)
    p.add_argument(
        "--model-version",
        default=None,
        help="serve this champion version (default: the registry's production stage)",
    )
    p.add_argument("--state-dir", default="var/state", help="RocksDB state directory")
    p.add_argument(
        "--recovery-dir", default="var/recovery", help="Bytewax recovery (snapshot) directory"
    )
    p.add_argument(
        "--no-recovery",
        action="store_true",
        help="run without Bytewax recovery (a restart re-reads the topics from the start)",
    )
    p.add_argument(
        "--state-partitions",
        "--partitions",
        type=Typed(int, ge=1),
        default=16,
        help="virtual state partitions, fixed for the life of the state directory (default: 16); "
        "--partitions and FRAUDSTREAM_PARTITIONS are deprecated names",
    )
    p.add_argument("--transactions-topic", default="transactions", help="input (DLQ: <topic>.dlq)")
    p.add_argument("--labels-topic", default="labels", help="late labels (DLQ: <topic>.dlq)")
    p.add_argument("--decisions-topic", default="decisions", help="the decision log")
    p.add_argument("--alerts-topic", default="alerts", help="drift and model alerts")
    p.add_argument(
        "--batch-size",
        type=Typed(int, ge=1),
        default=1000,
        help="records read per poll of the consumer",
    )
    p.add_argument(
        "--idle-grace-ms",
        type=Typed(int, ge=0),
        default=200,
        help="how long a caught-up input partition may hold the others back (ordering)",
    )
    p.add_argument(
        "--fetch-wait-ms",
        type=Typed(int, ge=0),
        default=100,
        help="longest a fetch waits for data (librdkafka fetch.wait.max.ms; a Kafka broker "
        "answers as soon as it has data, so this only bounds idle waits); brokers that answer "
        "slowly from their storage need more (Tansu on s3: 500)",
    )
    p.add_argument(
        "--canary-share",
        type=Typed(float, ge=0, le=1),
        default=0.05,
        help="share of transactions the canary model decides, by a hash of tx_id (default: 0.05)",
    )
    p.add_argument(
        "--model-poll-s",
        type=Typed(float, gt=0),
        default=1.0,
        help="how often the registry's stages are checked; changes apply between two batches",
    )
    p.add_argument(
        "--drift-detection",
        choices=["on", "off"],
        default="on",
        help="drift detectors and their alerts (periods of a day of event time; docs/models.md)",
    )
    p.add_argument(
        "--offset-policy",
        choices=["fail", "earliest", "latest"],
        default="fail",
        help="stored offsets outside the broker's log: stay unready, or reset and log",
    )
    p.add_argument(
        "--max-dead-letter-bytes",
        type=Typed(int, ge=1),
        default=256 * 1024,
        help="dead-letter copies are truncated past this size (header dlq.truncated)",
    )
    p.add_argument(
        "--epoch-interval",
        type=Typed(float, gt=0),
        default=2.0,
        help="seconds between snapshots (default: 2)",
    )
    p.add_argument("--no-tail", action="store_true", help="stop at the end of the topics")
    p.add_argument("--processes", type=Typed(int, ge=1), default=1, help="local Bytewax processes")
    p.add_argument("-w", "--workers", type=Typed(int, ge=1), default=1, help="workers per process")
    p.add_argument("-a", "--addresses", help="cluster addresses host:port,... (Bytewax -a)")
    p.add_argument(
        "-i", "--process-id", type=Typed(int, ge=0), default=0, help="this process (Bytewax -i)"
    )
    p.add_argument(
        "--metrics-port",
        type=Typed(int, ge=0, le=65535),
        default=0,
        help="port of /metrics, /healthz and /readyz (+ process id); 0 disables them",
    )
    p.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        help="address of /metrics, /healthz, /readyz (loopback unless you mean otherwise)",
    )
    p.add_argument(
        "--shutdown-timeout-s",
        type=Typed(float, gt=0),
        default=30.0,
        help="with --processes: children still running this long after SIGTERM are killed",
    )
    p.add_argument(
        "--stall-timeout-s",
        type=Typed(float, gt=0),
        default=120.0,
        help="/healthz fails after this long with input waiting and no progress",
    )
    add_kafka_options(p)
    p.set_defaults(func=cmd_run)


def _alerts_parsers(subs: Any) -> None:
    p = subs.add_parser("alerts", help="read the alerts topic")
    alerts = p.add_subparsers(dest="alerts_command", required=True)
    p = alerts.add_parser(
        "tail",
        help="print alerts one line each (no consumer group: commits nothing)",
        description="Prints the alerts topic, one line per alert (fraudstream.alerts). Without "
        "--from-beginning only alerts that arrive after the start are shown; without --follow "
        "it stops at the end offsets found at the start.",
    )
    p.add_argument("--alerts-topic", default="alerts", help="topic to read (default: alerts)")
    p.add_argument(
        "--from-beginning", action="store_true", help="start at the earliest alert still kept"
    )
    p.add_argument(
        "--follow", action="store_true", help="keep printing new alerts until interrupted"
    )
    p.add_argument(
        "--timeout-s",
        type=Typed(float, gt=0),
        default=30.0,
        help="bound on the metadata look-ups and, without --follow, the whole read (default: 30)",
    )
    add_kafka_options(p)
    p.set_defaults(func=cmd_alerts_tail)


def _config_parsers(subs: Any) -> None:
    p = subs.add_parser("config", help="the settings every command reads")
    config = p.add_subparsers(dest="config_command", required=True)
    p = config.add_parser(
        "show",
        help="print a command's effective settings and where each came from",
        description="Resolves the settings of COMMAND (default: run) as it would run with these "
        "flags, this environment and this file, and prints them with their source "
        "(flag, env, file, default); secrets are masked. The TOML output is a file that "
        "--config reads back. Options of `config show` itself go before COMMAND.",
    )
    flag_only(
        p.add_argument(
            "--format",
            choices=["toml", "json"],
            default="toml",
            help="output format (default: toml)",
        )
    )
    p.add_argument(
        "target",
        nargs=argparse.REMAINDER,
        metavar="COMMAND ...",
        help="the command and its flags, as you would run it (default: run)",
    )
    p.set_defaults(func=cmd_config_show)


def _demo_parser(subs: Any) -> None:
    p = subs.add_parser("demo", help="embedded broker end to end: simulate, train, score")
    p.add_argument("--workdir", default="var/demo", help="where the demo writes (replaced)")
    p.add_argument("--customers", type=Typed(int, ge=1), default=1000, help="simulated customers")
    p.add_argument(
        "--history-days",
        type=Typed(int, ge=1),
        default=60,
        help="days of history the sidecar drains and the models train on (>= the horizon + 14)",
    )
    p.add_argument(
        "--stream-days", type=Typed(int, ge=1), default=10, help="live days after the history"
    )
    p.add_argument(
        "--rate",
        type=Typed(float, gt=0),
        default=5000.0,
        help="cap on the live events/s; the demo offers 1/4 of the rate the sidecar sustained "
        "while draining the history",
    )
    p.add_argument(
        "--drift",
        choices=("amount", "new-pattern", "label", "none"),
        default="amount",
        help="drift injected into the live days (from live day 4)",
    )
    p.set_defaults(func=cmd_demo)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (the full usage is one ``--help`` away)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; every option is a setting (:func:`fraudstream.settings.finalize`)."""
    parser = _Parser(
        prog="fraudstream",
        description="Real-time fraud scoring: a Kafka sidecar, its models and their replays.",
    )
    subs = parser.add_subparsers(dest="command", required=True)
    _simulate_parser(subs)
    _train_parser(subs)
    _replay_parsers(subs)
    _backtest_parser(subs)
    _lifecycle_parsers(subs)
    _run_parser(subs)
    _alerts_parsers(subs)
    _config_parsers(subs)
    _demo_parser(subs)
    for leaf in _leaf_parsers(parser):
        _common_args(leaf)
    return finalize(parser)


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for child in subs[0].choices.values() for leaf in _leaf_parsers(child)]


# --- running a command and reporting its failure --------------------------------------------


def _log_format(args: argparse.Namespace) -> str:
    """JSON for the sidecar (read by log pipelines), text for commands a person runs."""
    chosen = getattr(args, "log_format", None)
    if chosen is None:
        chosen = os.environ.get("FRAUDSTREAM_LOG_FORMAT", "").strip().lower() or None
    if chosen in ("json", "text"):
        return str(chosen)
    return "json" if getattr(args, "_command", ("",))[0] == "run" else "text"


def _operational(exc: BaseException) -> FraudstreamError | None:
    """The operational error ``exc`` is, or ``None`` for a bug."""
    if isinstance(exc, FraudstreamError):
        return exc
    from aiokafka.errors import KafkaError
    from confluent_kafka import KafkaException

    if isinstance(exc, KafkaError | KafkaException):
        return BrokerError(f"Kafka: {type(exc).__name__}: {exc}")
    if isinstance(exc, ConnectionError | TimeoutError):
        return BrokerError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):  # a missing file or directory, no permission, a full disk
        return InputDataError(str(exc))
    return None


def _one_line(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return " | ".join(line.strip() for line in text.splitlines() if line.strip()) or "(no detail)"


def _report(args: argparse.Namespace, exc: Exception, secrets: list[str]) -> int:
    """One line on stderr; the detail in the log. Returns the exit status."""
    log = logging.getLogger("fraudstream.cli")
    command = " ".join(getattr(args, "_command", ()))
    error = _operational(exc)
    if error is None:  # a bug: its traceback is what a report of it needs
        log.error("%s failed unexpectedly", command, exc_info=exc, extra={"error_kind": "internal"})
        line = _one_line(f"{type(exc).__name__}: {exc}", secrets)
        print(f"fraudstream: internal error: {line}", file=sys.stderr)
        return 1
    line = _one_line(str(error), secrets)
    # JSON logs keep the traceback in the record; a person's terminal gets it at DEBUG only
    level = logging.ERROR if _log_format(args) == "json" else logging.DEBUG
    log.log(
        level,
        "%s failed: %s",
        command,
        line,
        exc_info=exc,
        extra={"error_kind": error.kind, "error_type": type(exc).__name__},
    )
    print(f"fraudstream: error: {line}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from fraudstream.logs import configure, register_secret

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args._argv = argv
    secrets: list[str] = []
    try:
        settings = resolve(args)
    except FraudstreamError as exc:
        configure(_log_format(args))
        return _report(args, exc, secrets)
    apply(args, settings)
    secrets = settings.secrets()
    for secret in secrets:
        register_secret(secret)
    configure(_log_format(args), args.log_level)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("fraudstream: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return _report(args, exc, secrets)


if __name__ == "__main__":
    raise SystemExit(main())
