"""The ``probe`` command (click). Exit codes (SPEC §10): 0 available, 1 unavailable or any
error code in the snapshot, 2 usage error (unknown provider, bad option)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from probe.config import ProbeConfig
from probe.errors import UnknownProviderError, check_provider
from probe.render import snapshot_text
from probe.service import ProbeService
from probe.snapshot import Snapshot
from workers.providers import NAMES as BUILTIN_NAMES
from workers.version import quota_probe_version

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2


def _provider_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A provider name option, checked against every provider (plugins too, from their
    metadata) when the command runs rather than when this module is imported."""
    if value is not None:
        try:
            check_provider(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _home_or_exit(home: str | None) -> str:
    """``--home``, else the profile Hermes itself would use (``probe.home_set.active_home``);
    a sticky ``active_profile`` naming a profile that does not exist is an error naming it
    (exit 1), never a quiet read of another profile."""
    if home is not None:
        return home
    from probe.home_set import HomeSetError, active_home

    try:
        return str(active_home())
    except HomeSetError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)


def _exit_code(snaps: list[Snapshot]) -> int:
    return EXIT_OK if all(s.available and s.error is None for s in snaps) else EXIT_UNAVAILABLE


def _print_snapshots(snaps: list[Snapshot], as_json: bool) -> None:
    if as_json:
        payload = snaps[0].to_dict() if len(snaps) == 1 else [s.to_dict() for s in snaps]
        click.echo(json.dumps(payload, indent=2))
    else:
        cards = _Cards()
        for snap in snaps:
            cards.print(snap)


class _Cards:
    """Prints snapshot cards one at a time, a blank line between them, each flushed as it
    is printed (``probe fetch --home`` shows a provider the moment its answer is due). A
    card without a title (an error) is headed by the provider's label, read once from the
    provider catalogue child when the first such card comes."""

    def __init__(self) -> None:
        from probe.providers import ProviderLabels

        self.labels = ProviderLabels()
        self.count = 0

    def print(self, snap: Snapshot) -> None:
        label = self.labels.get().get(snap.provider or "") if snap.provider and not snap.title else None
        click.echo(("\n" if self.count else "") + snapshot_text(snap, label=label))
        sys.stdout.flush()
        self.count += 1


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"probe (quota-probe) {quota_probe_version() or 'unknown: run from a source tree never installed'}")
    ctx.exit(EXIT_OK)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print quota-probe's version and exit.")
def main() -> None:
    """quota-probe: how much of each LLM account's quota is left."""


@main.command()
@click.argument("provider", required=False)
@click.option("--home", "home", type=click.Path(path_type=str), default=None,
              help="Profile directory [default: the profile Hermes uses: $HERMES_HOME, else "
                   "~/.hermes/active_profile's, else ~/.hermes].")
@click.option("--refresh", is_flag=True, help="Skip the cache.")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON (a list without PROVIDER).")
@click.option("--timeout", type=click.FloatRange(min=0.001, max=3600), default=None,
              help="Seconds before the probe gives up (default 20).")
def fetch(provider: str | None, home: str | None, refresh: bool, as_json: bool, timeout: float | None) -> None:
    """Show PROVIDER's quota for one home; without PROVIDER, every provider the home has a
    credential for, probed side by side (exit 0 only when all are available)."""
    home = _home_or_exit(home)
    if provider is None:
        _fetch_all(home, refresh, as_json, timeout)
        return
    with ProbeService(ProbeConfig(pool_size=0)) as service:
        try:
            snap = service.fetch(provider, home=home, refresh=refresh, timeout=timeout)
        except UnknownProviderError as exc:
            if as_json:
                click.echo(json.dumps({"error": {"code": exc.code, "message": str(exc)}}))
            else:
                click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
    _print_snapshots([snap], as_json)
    sys.exit(_exit_code([snap]))


@main.command()
@click.option("--home", "home", type=click.Path(path_type=str), default=None,
              help="Profile directory [default: the profile Hermes uses: $HERMES_HOME, else "
                   "~/.hermes/active_profile's, else ~/.hermes].")
@click.option("--probe", "do_probe", is_flag=True, help="Also probe every provider a credential was found for.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(home: str | None, do_probe: bool, as_json: bool) -> None:
    """Where quota-probe looks for each provider's credential, what it finds (never a
    value), file permissions and base URLs; exit 1 with what to do when something is wrong."""
    from probe.doctor import DoctorError, doctor_text, examine, findings, probe_found

    home = _home_or_exit(home)
    try:
        report = examine(home)
    except DoctorError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if do_probe:
        probe_found(report)
    problems = findings(report)
    click.echo(json.dumps({**report, "problems": problems}, indent=2) if as_json else doctor_text(report, problems))
    sys.exit(EXIT_UNAVAILABLE if problems else EXIT_OK)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of providers.")
def providers(as_json: bool) -> None:
    """Every provider -- built-in or plugin -- with its label, origin and version, and where
    it looks for a credential; refused plugins with the reason. Plugin modules are imported
    by a child process only, never by this one."""
    from probe.providers import ChildFailed, list_providers, providers_text

    try:
        rows = list_providers()
    except ChildFailed as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    click.echo(json.dumps(rows, indent=2) if as_json else providers_text(rows))


def _fetch_all(home: str | None, refresh: bool, as_json: bool, timeout: float | None) -> None:
    """Every provider the home has a credential for (SPEC §17: built-ins, plugins, then
    the ids only auth.json's credential_pool holds), the same list as ``GET /api/quota``
    without a provider; a home with none says so; a missing home is one snapshot. One
    worker reads the home (``fetch_home``): one pool slot, so the list and the probes are
    two requests to one process, not two one-shots. Text cards are printed as the answers
    come, in the list's order (a slow provider holds back only the cards after it);
    ``--json`` prints the list once, complete."""
    cards = None if as_json else _Cards()
    with ProbeService(ProbeConfig(pool_size=1)) as service:
        snaps = service.fetch_home(home=home, refresh=refresh, timeout=timeout,
                                   on_snapshot=cards.print if cards else None)
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in snaps], indent=2))
    elif not snaps:
        click.echo("No provider credentials in this home; `probe doctor` shows where quota-probe looked.")
    sys.exit(_exit_code(snaps) if snaps else EXIT_UNAVAILABLE)


@main.command()
@click.option("--home", "home", type=click.Path(path_type=str), default=None,
              help="Profile directory [default: the profile Hermes uses: $HERMES_HOME, else "
                   "~/.hermes/active_profile's, else ~/.hermes].")
@click.option("--provider", required=True, help="Which provider's history.")
@click.option("--history", "history_path", default=None, type=click.Path(dir_okay=False),
              help="History database [default: $XDG_STATE_HOME/quota-probe/history.sqlite3].")
@click.option("--days", type=click.FloatRange(min=0.01), default=7.0, show_default=True, help="How far back.")
@click.option("--account", default=None, metavar="ID",
              help="One account's history (its id, as `probe fetch --json` lists it) [default: every account].")
@click.option("--json", "as_json", is_flag=True, help="Print the /api/history shape.")
def history(home: str | None, provider: str, history_path: str | None, days: float, account: str | None,
            as_json: bool) -> None:
    """A home's recorded readings for one provider, with a sparkline per window (per account
    for a provider with several)."""
    import time as _time

    from probe.monitor.history import HistoryError, default_path, query_file
    from probe.homes import home_path
    from probe.render import history_text

    try:
        check_provider(provider)
        resolved = home_path(home)
    except ValueError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    path = Path(history_path).expanduser() if history_path else default_path()
    if not path.is_file():
        click.echo(f"Error: no history file at {path} (probe serve writes it).", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    try:
        body = query_file(path, provider, _time.time() - days * 86400, home_path=str(resolved), account=account)
    except HistoryError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if as_json:
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(history_text(body, days))
    sys.exit(EXIT_OK if body["home"] is not None else EXIT_UNAVAILABLE)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the snapshots as a JSON list.")
def demo(as_json: bool) -> None:
    """Probe every built-in provider against the built-in emulator with throw-away demo
    homes: each provider once, from the first demo home holding a credential for it (the
    ``main`` home, then ``team``), in the providers' order."""
    from concurrent.futures import ThreadPoolExecutor

    from probe.tools.demo import demo_homes
    from probe.tools.emulator import Emulator

    with Emulator() as emulator, demo_homes() as homes:
        config = ProbeConfig(pool_size=0, provider_urls=emulator.provider_urls())
        with ProbeService(config) as service:
            listed = {name: service.home_providers(homes[name]).names for name in ("main", "team")}
            chosen = [(provider, next(name for name in listed if provider in listed[name]))
                      for provider in BUILTIN_NAMES if any(provider in names for names in listed.values())]
            with ThreadPoolExecutor(len(chosen)) as pool:
                snaps = list(pool.map(lambda pair: service.fetch(pair[0], home=homes[pair[1]]), chosen))
    _print_snapshots(snaps, as_json)
    sys.exit(_exit_code(snaps))


@main.command()
@click.option("--home", "home", required=True,
              help="The home to rotate: a path (in-process) or, with --server, the backend's home id.")
@click.option("--provider", default=None, callback=_provider_option, help="Only this provider.")
@click.option("--server", default=None, metavar="URL", help="Tell a running backend (POST /api/rotate).")
@click.option("--token", default=None, envvar="PROBE_TOKEN", help="The backend's bearer token (or $PROBE_TOKEN).")
@click.option("--cache-dir", default=None, envvar="PROBE_CACHE_DIR", type=click.Path(file_okay=False),
              help="Shared cache directory whose entries for this home to drop (in-process mode).")
@click.option("--redis", "redis_url", default=None, envvar="PROBE_REDIS_URL", metavar="URL",
              help="Rotate the home id across every backend sharing this Redis (cluster mode; the whole "
                   "home rotates, whatever --provider says: its generation is per home). Default "
                   "$PROBE_REDIS_URL, as for serve (keeps the password off the command line); --server wins.")
@click.option("--redis-prefix", default="quota-probe:", show_default=True, help="The cluster's key prefix.")
def rotate(home: str, provider: str | None, server: str | None, token: str | None, cache_dir: str | None,
           redis_url: str | None, redis_prefix: str) -> None:
    """Credential-rotation hook: flush a home's cached quota and workers.

    In-process, this drops the home's entries from the shared cache (--cache-dir); services
    in other processes also notice rewritten credential files on their own. With --server,
    the running backend flushes the home's cache and closes its workers. With --redis, HOME
    is a cluster home id: every backend of that Redis stops serving the home's cached
    readings and closes its workers (for a machine that runs no backend).
    """
    if redis_url and server and click.get_current_context().get_parameter_source("redis_url") \
            is click.core.ParameterSource.ENVIRONMENT:
        redis_url = None   # --server was asked for; $PROBE_REDIS_URL is only the default
    if redis_url:
        from probe.shared.cluster import ClusterUnavailable, RedisCluster

        cluster = RedisCluster(redis_url, prefix=redis_prefix)
        try:
            cluster.check()
        except ClusterUnavailable as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_UNAVAILABLE)
        try:
            generation = cluster.rotate(home)
        finally:
            cluster.close()
        if generation is None:
            click.echo("Error: Redis is unreachable; nothing was rotated.", err=True)
            sys.exit(EXIT_UNAVAILABLE)
        click.echo(f"Rotated home id {home} across the cluster (generation {generation}).")
        return
    if server:
        from probe.rotate_client import RotateError, rotate_remote

        try:
            rotate_remote(server, home, provider, token)
        except RotateError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_UNAVAILABLE)
        click.echo(f"Rotated {home} on {server}.")
        return
    from probe.homes import HomeNotFound, resolve_home

    try:
        home_dir = resolve_home(home)
    except (HomeNotFound, ValueError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    with ProbeService(ProbeConfig(pool_size=0, cache_dir=cache_dir)) as service:
        service.invalidate(home=home_dir, provider=provider)
    click.echo(f"Rotated {home_dir}" + (f" ({provider})" if provider else "") + ".")


@main.command()
@click.option("--server", default=None, metavar="URL",
              help="Ask a running backend (its /api/pool) instead of scanning this host.")
@click.option("--json", "as_json", is_flag=True)
def status(server: str | None, as_json: bool) -> None:
    """Workers per home: slots, alive, busy, pids, RSS."""
    from probe.status import local_templates, local_workers, status_text

    if server:
        import httpx

        try:
            response = httpx.get(server.rstrip("/") + "/api/pool", timeout=10)
            response.raise_for_status()
            pool = response.json()
            homes, cluster = pool.get("homes", {}), pool.get("cluster")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            click.echo(f"Error: could not read {server}/api/pool ({type(exc).__name__}).", err=True)
            sys.exit(EXIT_UNAVAILABLE)
        templates = []
    else:
        homes, templates, cluster = local_workers(), local_templates(), None
    if as_json:
        click.echo(json.dumps({"homes": homes, "cluster": cluster} if cluster is not None else homes, indent=2))
        return
    click.echo(status_text(homes, templates))
    if cluster is not None:
        click.echo(f"cluster: {'connected' if cluster.get('connected') else 'Redis unreachable (running alone)'}, "
                   f"{cluster.get('peers', 0)} backend(s) seen in the last minute")


@main.command()
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="A TOML file of serve options and [homes] [default: $XDG_CONFIG_HOME/quota-probe/config.toml "
                   "when it exists]; the command line wins; SIGHUP reads it again.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--home", "home_specs", multiple=True, metavar="ID=PATH",
              help="A home the panel may show (repeatable); exactly these [default: the Hermes root as 'default' "
                   "and each of its profiles].")
@click.option("--demo", is_flag=True, help="Start the emulator with demo homes (no real credentials).")
@click.option("--allow-remote", is_flag=True, help="Allow binding a non-loopback address.")
@click.option("--poll-s", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="How often the panel polls.")
@click.option("--cache-dir", default=None, envvar="PROBE_CACHE_DIR", type=click.Path(file_okay=False),
              help="Shared cache directory: backends on one host given the same one share results (SPEC §7).")
@click.option("--cache-ttl-s", type=click.FloatRange(min=0), default=None,
              help="How long a provider's answer is served from the cache [default: 45; 5 with --demo].")
@click.option("--refresh-s", type=click.FloatRange(min=0), default=None,
              help="Re-read every home's providers in the background about this often "
                   "[default: 300; 10 with --demo; 0 = off].")
@click.option("--history", "history_path", default=None, type=click.Path(dir_okay=False),
              help="History database [default: $XDG_STATE_HOME/quota-probe/history.sqlite3; with --demo a "
                   "throw-away file].")
@click.option("--no-history", is_flag=True, help="Keep no history (and send no alerts).")
@click.option("--history-days", type=click.FloatRange(min=0.01), default=35.0, show_default=True,
              help="Delete history points older than this.")
@click.option("--notify", multiple=True, metavar="URL",
              help="Send alerts to this Apprise URL (repeatable): json://, ntfy://, slack://, mailto://, ...")
@click.option("--alert-at", default="80,90,100", show_default=True, help="Alert when a window's used % reaches these.")
@click.option("--redis", "redis_url", default=None, envvar="PROBE_REDIS_URL", metavar="URL",
              help="Cluster mode: share cache, locks, back-off and rotations with every backend of this Redis "
                   "(redis://, rediss://; a password goes in the URL).")
@click.option("--redis-prefix", default="quota-probe:", show_default=True, help="Key prefix in Redis.")
def serve(config_path: str | None, **_: object) -> None:
    """HTTP backend + settings panel. Prints the bearer token for POST /api/rotate
    (or uses $PROBE_TOKEN). SIGHUP re-reads the config file and the profiles; SIGTERM
    stops it cleanly (exit 0)."""
    from probe.server.run import ServeError, serve as run_server

    ctx = click.get_current_context()
    try:
        options = serve_options(ctx, config_path)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    def reread():
        return serve_options(ctx, config_path)

    try:
        run_server(options, reread=reread, echo=lambda line: click.echo(line))
    except ServeError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def serve_options(ctx: click.Context, config_path: str | None) -> "ServeOptions":
    """``probe serve``'s options: the config file's values under the command line's (an
    option given on the command line or by its environment variable wins), each file
    value checked by the option's own click type so the file and the flags cannot drift
    apart. ValueError (``ConfigFileError``, ``HomeSetError``) naming the file and key, or
    the option, when something cannot be used. Called at start-up and on every SIGHUP."""
    from click.core import ParameterSource

    from probe import config_file
    from probe.home_set import parse_home_specs
    from probe.monitor.alerts import parse_thresholds
    from probe.server.run import HistoryOptions, ServeOptions

    params = {param.name: param for param in ctx.command.params}
    keys = _config_keys(ctx.command)
    path = config_file.find(config_path)
    loaded = config_file.load(path, {key: kind for key, (_, kind) in keys.items()})
    values = dict(ctx.params)
    given = {name for name in values
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    origin = {name: f"--{name.replace('_', '-')}" for name in values}
    for key, value in loaded.options.items():
        name = keys[key][0]
        if name in given:
            continue
        param = params[name]
        try:
            values[name] = tuple(param.type.convert(v, param, ctx) for v in value) if param.multiple \
                else param.type.convert(value, param, ctx)
        except click.BadParameter as exc:
            raise config_file.ConfigFileError(f"{path}: key {key.replace('_', '-')!r}: {exc.message}") from None
        origin[name] = f"{path}: key {key.replace('_', '-')!r}"
    if "home_specs" in given:
        homes = parse_home_specs(values["home_specs"])
    else:
        homes = loaded.homes
    try:
        thresholds = parse_thresholds(values["alert_at"])
    except ValueError as exc:
        raise config_file.ConfigFileError(f"{origin['alert_at']}: {exc}") from None
    history = HistoryOptions(enabled=not values["no_history"], path=values["history_path"],
                             days=values["history_days"], notify=tuple(values["notify"]), thresholds=thresholds)
    return ServeOptions(host=values["host"], port=values["port"], homes=homes, demo=values["demo"],
                        allow_remote=values["allow_remote"], poll_s=values["poll_s"], cache_dir=values["cache_dir"],
                        cache_ttl_s=values["cache_ttl_s"], refresh_s=values["refresh_s"], history=history,
                        redis_url=values["redis_url"], redis_prefix=values["redis_prefix"])


def _config_keys(command: click.Command) -> dict[str, tuple[str, str]]:
    """Config-file key (the long option without dashes, ``_`` for ``-``) -> (parameter
    name, the kind of value the file gives it), for every ``serve`` option but ``--config``
    and ``--home`` (the file's ``[homes]`` table)."""
    from probe import config_file

    keys = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in ("config_path", "home_specs", "help"):
            continue
        long_name = max(param.opts, key=len).lstrip("-").replace("-", "_")
        if param.name == "alert_at":
            kind = config_file.THRESHOLDS
        elif param.is_flag:
            kind = config_file.FLAG
        elif param.multiple:
            kind = config_file.STRINGS
        elif isinstance(param.type, click.types.IntParamType):
            kind = config_file.INTEGER
        elif isinstance(param.type, click.types.FloatParamType):
            kind = config_file.NUMBER
        else:
            kind = config_file.STRING
        keys[long_name] = (param.name, kind)
    return keys


@main.command("homes")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="The config file serve would read [default: $XDG_CONFIG_HOME/quota-probe/config.toml when it exists].")
@click.option("--home", "home_specs", multiple=True, metavar="ID=PATH", help="As serve's --home (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {id, path, providers, error}.")
def homes_command(config_path: str | None, home_specs: tuple[str, ...], as_json: bool) -> None:
    """The homes `probe serve` would serve with the same --config and --home: each home's
    id, directory and the providers it has a credential for (asked of a worker, as serve
    does). Without either: the Hermes root as 'default' and each of its profiles."""
    from concurrent.futures import ThreadPoolExecutor

    from probe import config_file
    from probe.home_list import HomeListFailed
    from probe.home_set import HomeSet, parse_home_specs

    try:
        if home_specs:
            fixed = parse_home_specs(home_specs)
        else:
            kinds = {key: kind for key, (_, kind) in _config_keys(serve).items()}
            fixed = config_file.load(config_file.find(config_path), kinds).homes
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    found = HomeSet(fixed).scan()

    def row(item: tuple[str, Path]) -> dict:
        home_id, path = item
        try:
            return {"id": home_id, "path": str(path), "providers": list(service.home_providers(path).names),
                    "error": None}
        except HomeListFailed as exc:
            return {"id": home_id, "path": str(path), "providers": [], "error": str(exc)}

    with ProbeService(ProbeConfig(pool_size=0)) as service, ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(row, found.items()))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        id_width = max(len(r["id"]) for r in rows)
        path_width = max(len(r["path"]) for r in rows)
        for r in rows:
            what = r["error"] or (", ".join(r["providers"]) or "(no provider credentials)")
            click.echo(f"{r['id']:<{id_width}}  {r['path']:<{path_width}}  {what}")
    if any(r["error"] for r in rows):   # as `probe fetch`: a home that cannot be read is a failure
        raise SystemExit(1)


@main.command()
@click.option("--homes", type=click.IntRange(1, 10000), default=3, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 512), default=8, show_default=True)
@click.option("--requests", type=click.IntRange(1), default=None, help="Total fetches (default 300).")
@click.option("--duration", type=click.FloatRange(min=0.1), default=None, help="Run for this many seconds instead.")
@click.option("--pool-size", type=click.IntRange(0, 64), default=2, show_default=True)
@click.option("--latency-ms", type=click.IntRange(0, 60000), default=0, show_default=True,
              help="Provider latency the emulator adds.")
@click.option("--fault-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of provider answers that are injected faults.")
@click.option("--rotate-every", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Rotate a random home's credential every S seconds (0: never).")
@click.option("--kill-every", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="SIGKILL a random pool worker every S seconds (0: never).")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=600), default=10.0, show_default=True,
              help="Each caller's deadline.")
@click.option("--poll-interval", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Poll every home once per S seconds, spread evenly (0: random homes back to back).")
@click.option("--max-total-workers", type=click.IntRange(0), default=None,
              help="The service's worker budget (default: ProbeConfig's).")
@click.option("--providers-per-home", type=click.IntRange(1, 4), default=1, show_default=True,
              help="Credentials per home, K of deepseek, anthropic, openai-codex, openrouter (rotating; 1: DeepSeek).")
@click.option("--home-reads", is_flag=True,
              help="Each poll reads the whole home in one worker request (fetch_home), not a fetch per provider.")
@click.option("--accounts", "accounts_per_home", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Accounts each provider of a home holds (numbered .env keys, Codex pool rows); above 1 every "
                   "account's answer is checked to carry its own account's value (no_cross_account).")
@click.option("--backends", type=click.IntRange(1, 32), default=None,
              help="Cluster mode: run this many probe serve processes sharing --redis, poll them over HTTP.")
@click.option("--redis", "redis_url", default=None, envvar="PROBE_REDIS_URL", metavar="URL",
              help="The Redis the --backends share.")
@click.option("--redis-restart-every", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --backends: restart Redis every S seconds (connections dropped, keys gone; 0: never).")
@click.option("--garbage-for", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --backends: write random garbage into the prefix's keys and channel for S seconds, "
                   "from a third of the run on.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report.")
def stress(homes: int, concurrency: int, requests: int | None, duration: float | None, pool_size: int,
           latency_ms: int, fault_rate: float, rotate_every: float, kill_every: float, timeout: float,
           poll_interval: float, max_total_workers: int | None, providers_per_home: int, home_reads: bool,
           accounts_per_home: int, backends: int | None, redis_url: str | None, redis_restart_every: float, garbage_for: float,
           as_json: bool) -> None:
    """Load the service against the built-in emulator and check its invariants.

    Exits 1 if any invariant failed (a leaked process, FD or thread; a result carrying another
    home's or a pre-rotation credential's data; a caller answered after its deadline).
    With --providers-per-home K each home holds K of the four built-ins (DeepSeek, Anthropic,
    OpenAI Codex, OpenRouter); a poll then fetches each of them in turn, or, with --home-reads,
    reads the whole home at once (SPEC §17).
    With --backends N --redis URL: N real backends sharing that Redis, polled over HTTP;
    the report adds provider requests per (home, provider) per cache TTL.
    """
    from probe.tools.stress import StressOptions, run_stress

    if requests is not None and duration is not None:
        raise click.UsageError("give --requests or --duration, not both")
    if backends is None and (redis_restart_every or garbage_for):
        raise click.UsageError("--redis-restart-every and --garbage-for need --backends")
    if backends is not None:
        if providers_per_home != 1 or home_reads or accounts_per_home != 1:
            raise click.UsageError("--providers-per-home, --home-reads and --accounts are not available with --backends")
        if not redis_url:
            raise click.UsageError("--backends needs --redis URL (or $PROBE_REDIS_URL)")
        from probe.tools.cluster_stress import run_cluster_stress

        report = run_cluster_stress(backends=backends, redis_url=redis_url, homes=homes, concurrency=concurrency,
                                    duration_s=duration or 10.0, timeout_s=timeout, rotate_every_s=rotate_every,
                                    restart_redis_every_s=redis_restart_every, garbage_s=garbage_for)
        if as_json:
            click.echo(json.dumps(report, indent=2))
        else:
            lat = report["latency_ms"]
            click.echo(f"{report['requests']} polls over {backends} backends in {report['duration_s']:.1f} s: "
                       f"p50 {lat['p50']} ms, p99 {lat['p99']} ms; provider requests {report['provider_requests']} "
                       f"= {report['provider_requests_per_home_per_ttl']} per (home, provider) per "
                       f"{report['cache_ttl_s']:g} s TTL; answers {report['answers']}")
            if "faults" in report:
                click.echo(f"faults: {report['faults']}")
            click.echo("invariants: " + ", ".join(f"{k} {'ok' if v else 'VIOLATED'}"
                                                  for k, v in report["invariants"].items()))
        sys.exit(EXIT_OK if report["ok"] else EXIT_UNAVAILABLE)
    options = StressOptions(homes=homes, concurrency=concurrency,
                            requests=None if duration is not None else (requests or 300), duration_s=duration,
                            pool_size=pool_size, latency_ms=latency_ms, fault_rate=fault_rate,
                            rotate_every_s=rotate_every, kill_every_s=kill_every, timeout_s=timeout,
                            poll_interval_s=poll_interval, max_total_workers=max_total_workers,
                            providers_per_home=providers_per_home, home_reads=home_reads,
                            accounts_per_home=accounts_per_home)
    if as_json:
        report = run_stress(options)
        click.echo(json.dumps(report, indent=2))
    else:
        length = options.requests if options.requests is not None else None
        label = f"{concurrency} callers, {homes} homes" + (f" every {poll_interval:g} s" if poll_interval else "") + \
            (" (home reads)" if home_reads else "")
        with click.progressbar(length=length or 0, label=label, file=sys.stderr,
                               show_pos=length is not None) as bar:
            report = run_stress(options, progress=bar.update)
        click.echo(stress_text(report))
    sys.exit(EXIT_OK if report["ok"] else EXIT_UNAVAILABLE)


def stress_text(report: dict) -> str:
    lat = report["latency_ms"]
    lines = [
        f"{report['requests']} polls in {report['duration_s']:.1f} s: {report['throughput_rps']} req/s"
        + (f" ({sum(report['provider_answers'].values())} provider answers)"
           if report["options"].get("providers_per_home", 1) > 1 else ""),
        f"latency ms: p50 {lat['p50']:.2f}  p95 {lat['p95']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}",
        "paths: " + ", ".join(f"{k} {v}" for k, v in sorted(report["paths"].items())),
        "errors: " + (", ".join(f"{k} {v}" for k, v in sorted(report["errors"].items())) or "none"),
        "injected: fault rate {fault_rate}, worker kills {worker_kills}".format(**report["injected"]),
        "parent before: {processes} processes, {threads} threads, {fds} fds".format(**report["before"]),
        "parent after:  {processes} processes, {threads} threads, {fds} fds".format(**report["after"]),
        f"worker RSS MB: median {report['worker_rss_mb']['median']}, max {report['worker_rss_mb']['max']}",
        f"service CPU: {report['service_cpu']['seconds']:.1f} s = {report['service_cpu']['percent_of_one_core']}% "
        f"of one core; {report['spawns']} worker starts ({report['spawn']['method']}, "
        f"median {report['spawn']['median_ms']} ms), {report['starts_per_poll']} per poll; "
        f"{report['home_reads']} home reads",
        ("parent RSS MB: early {early}, end {end}, max {max} (growth {growth}x)".format(**report["parent_rss_mb"])
         if report["parent_rss_mb"]["growth"] is not None else "parent RSS MB: run too short for a trend"),
    ]
    if report["schedule_lag_ms"]:
        lines.append("poll schedule lag ms: p50 {p50:.2f}  p99 {p99:.2f}  max {max:.2f}".format(**report["schedule_lag_ms"]))
    lines += [f"  {'ok  ' if ok else 'FAIL'} {name}" for name, ok in report["invariants"].items()]
    lines += [f"  left unreaped: {what}" for what in report.get("zombies", [])]
    lines.append("OK" if report["ok"] else "FAILED")
    return "\n".join(lines)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="0 picks a free port.")
@click.option("--tls", is_flag=True, help="Serve HTTPS with a certificate from a throw-away CA "
                                          "(prints the SSL_CERT_FILE that trusts it).")
def emulator(host: str, port: int, tls: bool) -> None:
    """Run the provider emulator until Ctrl-C."""
    from probe.tools.emulator import serve_forever_cli

    try:
        serve_forever_cli(host, port, tls)
    except RuntimeError as exc:
        raise click.UsageError(str(exc)) from None


if __name__ == "__main__":
    main()
