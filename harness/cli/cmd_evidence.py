"""Evidence commands: keygen, verify, promote, signoff, report, diff, history.

A command that takes a run takes its folder, its run id, ``latest`` or ``previous``
(the newest complete runs; ``group.find_run``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from harness.cli.group import cli, config, evidence_dir_option, find_run
from harness.errors import UsageError
from harness.exitcodes import ExitCode

# --------------------------------------------------------------------------- evidence


@cli.command()
@click.option(
    "-o",
    "--out",
    default="harness-signing.key",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Private key path; the public key is OUT.pub.",
)
@click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Protect the private key with the passphrase in this environment variable.",
)
@click.option(
    "--pkcs11",
    "pkcs11_uri",
    metavar="URI",
    help="Generate the key pair inside this PKCS#11 token instead (pkcs11:token=...;"
    "object=LABEL?module-path=...; PIN from $HARNESS_PKCS11_PIN): the private key is "
    "made there and never leaves it; only the public key is written, to OUT.pub.",
)
def keygen(out: str, passphrase_env: str | None, pkcs11_uri: str | None) -> int:
    """Write an Ed25519 key pair for signing evidence (private key mode 0600)."""
    import os

    from harness.signing import generate_keypair, keyid_of, load_public_key

    if pkcs11_uri:
        if passphrase_env:
            raise UsageError(
                "--pkcs11 and --passphrase-env exclude each other (the token has a PIN)"
            )
        return _keygen_in_token(pkcs11_uri, Path(out).with_name(Path(out).name + ".pub"))
    passphrase = None
    if passphrase_env:
        if not os.environ.get(passphrase_env):
            raise UsageError(f"--passphrase-env {passphrase_env}: the variable is not set")
        passphrase = os.environ[passphrase_env].encode()
    private, public = generate_keypair(Path(out), passphrase)
    click.echo(f"private key: {private} (mode 0600; keep it out of the repository)")
    click.echo(f"public key:  {public}")
    click.echo(f"keyid:       {keyid_of(load_public_key(public))}")
    return 0


def _keygen_in_token(uri: str, public_path: Path) -> int:
    from harness.hsm import generate_token_key, parse_uri, public_key_pem
    from harness.signing import keyid_of, load_public_key, take_pin

    if public_path.exists():
        raise UsageError(f"{public_path} exists; refusing to overwrite a key (move it away first)")
    public = generate_token_key(uri, take_pin())
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_bytes(public_key_pem(public))
    click.echo(f"private key: in the token, {parse_uri(uri).shown} (sensitive, never extractable)")
    click.echo(f"public key:  {public_path}")
    click.echo(f"keyid:       {keyid_of(load_public_key(public_path))}")
    return 0


@cli.command()
@click.argument("sign_key")
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False),
    help="Write the public key (PEM) here [print it].",
)
def pubkey(sign_key: str, out: str | None) -> int:
    """Export the public key (PEM) of a signing key: a PEM private key file, or a
    pkcs11: URI naming a key in a token (PIN from $HARNESS_PKCS11_PIN)."""
    from cryptography.hazmat.primitives import serialization

    from harness.signing import is_pkcs11_uri, keyid_of, load_signer, take_pin

    if is_pkcs11_uri(sign_key):
        from harness.hsm import TokenKey

        signer = TokenKey(sign_key, take_pin())()
    else:
        signer = load_signer(Path(sign_key))
    public = signer.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if out:
        Path(out).write_bytes(pem)
        click.echo(f"public key: {out}")
    else:
        click.echo(pem.decode(), nl=False)
    click.echo(f"keyid:      {keyid_of(public)}", err=not out)
    return 0


@cli.command()
@click.argument("run")
@click.option(
    "--key",
    "keys",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Public key(s) (PEM) a valid signature must come from [[tool.harness] allowed-keys].",
)
@evidence_dir_option
def verify(run: str, keys: tuple[str, ...], evidence_dir: str | None) -> int:
    """Verify a run's bundle (RUN: its folder, run id, 'latest' or 'previous': the
    newest complete runs): digests, signatures, statements, audit chain, verdict."""
    from harness.signing import load_public_key
    from harness.verify import verify_run

    paths = [Path(k) for k in keys] or list(config().allowed_keys)
    if not paths:
        raise UsageError(
            "no public key to verify with: pass --key PUB.pem or set [tool.harness] "
            "allowed-keys in pyproject.toml"
        )
    run_dir = str(find_run(run, evidence_dir))
    problems = verify_run(Path(run_dir), [load_public_key(p) for p in paths])
    for p in problems:
        click.echo(p)
    if problems:
        click.echo(
            f"FAILED: {len(problems)} problem{'s' if len(problems) != 1 else ''} in {run_dir}"
        )
        return int(ExitCode.NOT_GO)
    click.echo(f"OK: {run_dir} verifies (digests, signatures, statements, audit chain, verdict)")
    return 0


@cli.command()
@click.argument("run")
@click.option("--to", "name", required=True, help="What the run is promoted to (e.g. production).")
@click.option(
    "--allowed-key",
    "allowed",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Public key allowed to have signed the run [[tool.harness] allowed-keys].",
)
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False),
    help="The promoter's private key, a PEM file or a pkcs11: URI "
    "[$HARNESS_SIGN_KEY or [tool.harness] sign-key].",
)
@click.option("--as", "signer_name", default="", help="The promoter's name, recorded and signed.")
@evidence_dir_option
def promote(
    run: str,
    name: str,
    allowed: tuple[str, ...],
    sign_key: str | None,
    signer_name: str,
    evidence_dir: str | None,
) -> int:
    """Promote a readiness run (RUN: its folder, run id, 'latest' or 'previous': the
    newest complete runs): refused unless it verifies under an allowed key, is GO, is a
    full run (never --teeth, --fast or a selection) of every blocker criterion of this
    project's contracts (or the criteria release-policy.yaml names for the target), and
    was made from a clean checkout at this checkout's commit, with the policy's
    sign-offs (and, when it names an audit-log, a candidate the lifecycle log shows
    trained under data governance). Prints each rule PASS/FAIL."""
    from harness.cli.group import contract_paths
    from harness.loader import load_contract_set
    from harness.policy import find_policy
    from harness.replay import PromotionRefused
    from harness.replay import promote as do_promote

    cfg = config()
    run_dir = str(find_run(run, evidence_dir))
    contracts = load_contract_set(contract_paths((), cfg))
    required = sorted(c.id for c in contracts.criteria if c.severity == "blocker")
    keys = [Path(a) for a in allowed] or list(cfg.allowed_keys)
    policy = find_policy(cfg.root)
    if policy is not None:
        spec = policy.target(name)  # an unknown target is a usage error, before anything is read
        if spec.criteria is not None:  # the policy names the criteria this target needs
            unknown = sorted(set(spec.criteria) - {c.id for c in contracts.criteria})
            if unknown:
                raise UsageError(
                    f"{policy.path}: targets.{name}.criteria names {', '.join(unknown)}, "
                    "which no contract defines; fix the ID or drop it"
                )
            required = sorted(spec.criteria)
    signer = _signer(sign_key, cfg)
    ledger = cfg.promotions or cfg.root / "release" / "promotions.jsonl"
    gate: dict[str, Any] = {"contracts": [k.sha256 for k in contracts.contracts]}
    gate["require_policy"] = True

    def show(rules: list[Any]) -> None:  # each rule PASS/FAIL, as judged
        for rule in rules:
            click.echo(rule.line())

    try:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        record = do_promote(
            Path(run_dir), name, keys, signer, ledger, signer_name, cfg.root, required, policy,
            on_rules=show, **gate,
        )  # fmt: skip
    except PromotionRefused as exc:
        click.echo("promotion REFUSED:", err=True)
        for reason in exc.reasons:
            click.echo(f"  {reason}", err=True)
        return int(ExitCode.NOT_GO)
    click.echo(
        f"promoted {record['run_id']} to {name}, signed by {record['promoted_by'][:16]}; "
        f"recorded in {ledger} (commit it: it is the release registry)"
    )
    return 0


@cli.command()
@click.option("--key", "keys", multiple=True, type=click.Path(dir_okay=False),
              help="Promoters' public keys the records must be signed by "
              "[[tool.harness] allowed-keys and the policy's role keys].")  # fmt: skip
def promotions(keys: tuple[str, ...]) -> int:
    """List the promotions in the release registry ([tool.harness] promotions, default
    release/promotions.jsonl) and check its hash chain and every record's signature."""
    from harness.policy import find_policy
    from harness.replay import ledger_records, verify_ledger
    from harness.signing import load_public_key

    cfg = config()
    ledger = cfg.promotions or cfg.root / "release" / "promotions.jsonl"
    if not ledger.is_file():
        click.echo(f"no promotions yet ({ledger} does not exist)")
        return 0
    policy = find_policy(cfg.root)
    trusted = [Path(k) for k in keys] or [
        *cfg.allowed_keys,
        *(policy.roles.values() if policy else ()),
    ]
    for r in ledger_records(ledger):  # what a line that is no record is: verify_ledger says
        commit = str((r.get("git") or {}).get("commit"))[:12]
        click.echo(
            f"{r.get('promoted_at')}  {r.get('name'):<12} {r.get('run_id')}  "
            f"{r.get('verdict')}  commit {commit}  by {str(r.get('promoted_by'))[:16]} "
            f"({r.get('signer_name') or '-'})  sign-offs: {', '.join(r.get('signoffs', [])) or '-'}"
            f"  candidate: {len(r.get('candidate', {}))} artifact(s)"
        )
    problems = verify_ledger(ledger, [load_public_key(k) for k in trusted])
    for p in problems:
        click.echo(f"problem: {p}", err=True)
    return int(ExitCode.NOT_GO) if problems else 0


def _signer(sign_key: str | None, cfg: Any) -> Any:
    """The key a promotion or sign-off is signed with: a PEM file or a pkcs11: URI."""
    from harness.signing import load_signer, resolve_sign_key

    key_path = resolve_sign_key(sign_key, cfg.sign_key)
    if isinstance(key_path, str):  # a pkcs11: URI: sign in the token
        from harness.hsm import TokenKey
        from harness.signing import take_pin

        return TokenKey(key_path, take_pin())()
    return load_signer(key_path) if key_path is not None else None


@cli.command()
@click.argument("run")
@click.option("--role", required=True, help="The role signing off (a role of release-policy.yaml).")
@click.option("--to", "target", default="production", show_default=True,
              help="The promotion target the sign-off is for.")  # fmt: skip
@click.option(
    "--key",
    "sign_key",
    required=True,
    help="The role's private key, a PEM file or a pkcs11: URI; its public key must be the "
    "one release-policy.yaml commits for the role.",
)
@click.option(
    "--allowed-key",
    "allowed",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Public key allowed to have signed the run [[tool.harness] allowed-keys].",
)
@evidence_dir_option
def signoff(
    run: str,
    role: str,
    target: str,
    sign_key: str,
    allowed: tuple[str, ...],
    evidence_dir: str | None,
) -> int:
    """Sign off a run (RUN: its folder, run id, 'latest' or 'previous': the newest
    complete runs) for a target as
    one role of the release policy: a signed statement over the run's verdict and the
    candidate's digests, kept beside the bundle. Refused unless the run verifies and the
    key is the role's committed key."""
    from harness.policy import candidate_digests, find_policy, write_signoff
    from harness.signing import keyid_of, load_public_key
    from harness.verify import verify_run

    cfg = config()
    run_dir = str(find_run(run, evidence_dir))
    policy = find_policy(cfg.root)
    if policy is None:
        raise UsageError(
            f"no {cfg.root / 'release-policy.yaml'}: write the release policy first "
            "(docs/releasing.md)"
        )
    spec = policy.target(target)
    if role not in policy.roles:
        raise UsageError(
            f"{policy.path}: no role {role!r} (roles: {', '.join(sorted(policy.roles))})"
        )
    if role not in spec.roles:
        raise UsageError(f"{policy.path}: target {target} takes no sign-off from {role!r}")
    keys = [Path(a) for a in allowed] or list(cfg.allowed_keys)
    if not keys:
        raise UsageError(
            "no allowed keys to verify the run with: pass --allowed-key PUB.pem or set "
            "[tool.harness] allowed-keys"
        )
    problems = verify_run(Path(run_dir), [load_public_key(k) for k in keys])
    if problems:
        click.echo(f"sign-off REFUSED: {run_dir} does not verify under an allowed key:", err=True)
        for p in problems[:10]:
            click.echo(f"  {p}", err=True)
        return int(ExitCode.NOT_GO)
    signer = _signer(sign_key, cfg)
    committed = keyid_of(load_public_key(policy.roles[role]))
    if signer.keyid != committed:
        raise UsageError(
            f"{sign_key}: not the key {policy.path} commits for {role} "
            f"({policy.roles[role]}, keyid {committed[:16]})"
        )
    digests = candidate_digests(policy, spec)
    path = write_signoff(Path(run_dir), role, target, digests, signer)
    click.echo(
        f"{role} signed off {Path(run_dir).name} for {target} ({len(digests)} artifacts): {path}"
    )
    return 0


# --------------------------------------------------------------------------- reports


@cli.command()
@click.argument("run")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write the HTML report.")
@click.option(
    "--markdown", "md_out", type=click.Path(dir_okay=False), help="Write the Markdown summary."
)
@click.option("--sarif", "sarif_out", type=click.Path(dir_okay=False), help="Write SARIF 2.1.0.")
@click.option(
    "--slowest",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Print where the run's time went: wall time, summed check time, the N slowest checks.",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Public key(s) to verify the run's signatures in the report.",
)
@evidence_dir_option
def report(
    run: str,
    html_out: str | None,
    md_out: str | None,
    sarif_out: str | None,
    slowest: int | None,
    keys: tuple[str, ...],
    evidence_dir: str | None,
) -> int:
    """Render a finished run's evidence (RUN: its folder, run id, 'latest' or
    'previous': the newest complete runs) as HTML, Markdown or SARIF, or print
    where its time went (--slowest N)."""
    from harness.fsutil import atomic_write_json, atomic_write_text
    from harness.history import load_results, time_profile
    from harness.reporters.html import render_html, signature_status
    from harness.reporters.markdown import markdown_summary

    if not (html_out or md_out or sarif_out) and slowest is None:
        raise UsageError(
            "say what to write: --html FILE, --markdown FILE, --sarif FILE or --slowest N"
        )
    rd = find_run(run, evidence_dir)
    result = load_results(rd)
    if slowest is not None:
        for line in time_profile(result, rd, slowest):
            click.echo(line)
    if html_out:
        status = signature_status(rd, [Path(k) for k in keys])
        atomic_write_text(Path(html_out), render_html(result, rd, status, Path(html_out).parent))
        click.echo(f"wrote {html_out} ({result.verdict.value}; signatures: {status})")
    if md_out:
        atomic_write_text(Path(md_out), markdown_summary(result))
        click.echo(f"wrote {md_out}")
    if sarif_out:
        from harness.loader import load_contract_set
        from harness.reporters.sarif import sarif_log

        contracts = load_contract_set([rd / "contracts"]) if (rd / "contracts").is_dir() else None
        atomic_write_json(Path(sarif_out), sarif_log(result, contracts))
        click.echo(f"wrote {sarif_out}")
    return 0


@cli.command()
@click.argument("run_a")
@click.argument("run_b", default="latest")
@evidence_dir_option
def diff(run_a: str, run_b: str, evidence_dir: str | None) -> int:
    """What changed between two runs (paths, run ids, 'latest' or 'previous': the newest
    complete runs; a killed run by its id). Exits 1 when something regressed, 4 when a
    run has no results (killed mid-run)."""
    from harness.history import diff_runs

    a, b = find_run(run_a, evidence_dir), find_run(run_b, evidence_dir)
    changes, env, regressed = diff_runs(a, b)
    click.echo(f"diff {a.name} -> {b.name}")
    for line in changes:
        click.echo(f"  {line}")
    for line in env:
        click.echo(f"  {line}")
    if not changes and not env:
        click.echo("  no change in verdicts, observations or environment")
    click.echo("REGRESSED" if regressed else "no regression")
    return int(ExitCode.NOT_GO if regressed else ExitCode.GO)


@cli.command()
@click.argument("criterion_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@evidence_dir_option
def history(criterion_id: str | None, as_json: bool, evidence_dir: str | None) -> int:
    """Verdicts across the runs in the evidence directory, newest first."""
    from harness import history as hist

    evidence = Path(evidence_dir) if evidence_dir else config().evidence_dir
    rows = hist.history(evidence, criterion_id)
    if as_json:
        click.echo(json.dumps(hist.as_json(rows), indent=2))
        return 0
    if not rows:
        if not hist.run_dirs(evidence):
            click.echo(f"no runs yet in {evidence} (`harness run` makes the first)")
        else:
            click.echo(f"no run of criterion {criterion_id} in {evidence}")
        return 0
    for r in rows:
        dirty = "+dirty" if r.dirty else ""
        click.echo(
            f"{r.started:<26} {r.run_id:<26} {(r.commit or 'no-git')[:10]}{dirty:<6} "
            f"{r.verdict:<13} {r.profile}"
        )
    red = next((r for r in rows if r.verdict in ("NO-GO", "UNPROVEN")), None)
    subject = criterion_id or "the release"
    if red:
        click.echo(
            f"{subject} last went {red.verdict} in run {red.run_id} on commit "
            f"{(red.commit or 'unknown')[:10]} ({red.started})"
        )
    else:
        click.echo(f"{subject} has not gone red in {len(rows)} recorded runs")
    return 0
