"""What mageproxy serves: nginx sites and /etc/hosts entries planned from the routes of many
instances (each route validated by routes.py).

Duplicate (server name, path) pairs are refused unless every claimant says `balance`.

Trust: a route record is data read from LXD, which whoever may edit the instance controls. Only
declared instances (this run's declarations, or ones the operator names as such) may set site
options (TLS, redirect, HSTS, basic auth) or name files on mageproxy, and every path of a server
name a declared instance serves is theirs alone; an undeclared record may only add plain routes on
other names, and one that breaks these rules is left out whole with a warning.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import OptionError
from .routes import Route, hosts_file_name, parse_route, upstream_address

FIX_ROUTE = "correct that route (lxd_provisioning_inventory, or user.mage.proxy on the instance), then rerun."
# OptionError.reasons of an undeclared route on a name a declared instance serves.
SERVED_BY_DECLARED = "served by a declared instance"
FIX_UNDECLARED = ("declare the instance and its routes in lxd_provisioning_inventory (or name it in "
                  "mageproxy_strict_instances), or remove that route from its user.mage.proxy, then rerun.")
# The Host of mageproxy's own check (roles/mageproxy/files/nginx-control.sh, mage_probe): a name in
# the reserved domain routes.RESERVED_DOMAIN, where no route may be, so the catch-all answers 503.
PROBE_HOST = "mage-lxd-probe.invalid"
# Where ACME HTTP-01 challenges are served on a site with tls: acme (rendered by the template).
ACME_CHALLENGE = "/.well-known/acme-challenge/"


@dataclass
class Backend:
    """One instance behind a location."""

    instance: str
    address: str
    port: int


@dataclass
class Location:
    """One path of one server: its upstream (possibly empty: then it answers 503)."""

    path: str
    upstream: str
    route: Route
    declared_at: str = ""
    backends: list[Backend] = field(default_factory=list)


@dataclass
class Site:
    """One server name with its locations, in path order."""

    server_name: str
    locations: list[Location] = field(default_factory=list)
    tls_cert: str = ""
    tls_key: str = ""
    redirect_https: bool = False
    tls_source: str = ""
    tls_declared_at: str = ""
    hsts: int = 0


def upstream_name(server_name: str, path: str) -> str:
    """A unique, safe upstream name: sanitised host and path plus a short hash of both."""
    digest = hashlib.sha256(f"{server_name} {path}".encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-z0-9]+", "_", f"{server_name}_{path}".lower()).strip("_")[:48]
    return f"mage_{readable}_{digest}"


@dataclass
class HostsEntry:
    """One line of mageproxy's /etc/hosts: an instance it proxies to."""

    address: str
    name: str


@dataclass
class ProxyPlan:
    """What mageproxy renders: sites, /etc/hosts entries, and warnings for instances left out."""

    sites: list[Site] = field(default_factory=list)
    hosts: list[HostsEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The warnings of undeclared instances left out for serving a name a declared instance serves.
    displaced: list[str] = field(default_factory=list)
    proxy_name: str = ""
    # The few sites that need files beyond the config (TLS, htpasswd): what mage_lxd_proxy_files
    # reads, so a playbook need not pass every site around again (costly with 500 of them).
    needs_files: list[Site] = field(default_factory=list)
    acme: bool = False
    # Server name -> the routes that make its site (for a warning when nginx refuses the site).
    owners: dict[str, str] = field(default_factory=dict)
    # nginx's server_names_hash_bucket_size and _max_size, fit for these names (see server_names_hash).
    names_hash: dict[str, int] = field(default_factory=lambda: {"bucket_size": 64, "max_size": 512})


def server_names_hash(names: Iterable[str]) -> dict[str, int]:
    """nginx's server_names_hash_bucket_size and _max_size for `names`, so any valid name loads.

    nginx refuses a name whose hash element (a pointer, then the name and 2 bytes aligned to a
    pointer) plus a pointer exceeds the bucket: with the default 64, names of 47 characters and more.
    The bucket is a power of two from 64; the table may grow to four slots per name (from 512).
    """
    names = list(names)
    longest = max((len(name) for name in names), default=0)
    needed = 8 + (longest + 2 + 7) // 8 * 8 + 8
    bucket = 64
    while bucket < needed:
        bucket *= 2
    size = 512
    while size < 4 * len(names):
        size *= 2
    return {"bucket_size": bucket, "max_size": size}


def plan_sites(hosts: Iterable[Mapping[str, Any]]) -> list[Site]:
    """Sites from every host's routes, each validated strictly (see plan_proxy)."""
    return plan_proxy(hosts, strict=None).sites


def plan_proxy(hosts: Iterable[Mapping[str, Any]], strict: Iterable[str] | None = None,
               proxy_name: str = "", declared: Mapping[str, Any] | None = None) -> ProxyPlan:
    """The proxy's plan from host dicts (name, project, status, address, routes).

    `strict` lists the declared instances ("project/name", or "name" for any project): a bad value
    there raises OptionError before anything changes. None means every instance. `declared` maps
    such keys to the routes a declaration gives; those routes are served, whatever the instance's
    own record says now (a difference is warned about). Any other instance is undeclared: it may not
    set site options (tls, redirect_https, hsts, htpasswd), nor serve any path of a server name a
    declared instance serves; a bad value, a clash or either of those leaves it out whole, with a
    warning naming it and the route, so the others still go live. Undeclared instances are planned
    after the declared ones, so they never displace a declared route. An undeclared instance whose
    address only it vouches for (`address_network` "": a NIC on an unmanaged network) is left out
    too. Stopped instances (or ones
    without an address) are left out of upstreams; a location without backends answers 503.
    `proxy_name`, the proxy's own name for its /etc/hosts, is checked like an instance name.
    """
    if proxy_name:
        hosts_file_name(proxy_name, "mageproxy's inventory name (mageproxy_name)")
    declared = dict(declared or {})
    wanted = None if strict is None else set(strict) | set(declared)

    def key_of(host: Mapping[str, Any], keys: Iterable[str]) -> str | None:
        for key in (f"{host.get('project', '')}/{host['name']}", str(host["name"])):
            if key in keys:
                return key
        return None

    def is_strict(host: Mapping[str, Any]) -> bool:
        return wanted is None or key_of(host, wanted) is not None

    ordered = sorted(hosts, key=lambda item: (not is_strict(item), str(item.get("project", "")), str(item["name"])))
    plan, claims, sites = ProxyPlan(proxy_name=proxy_name), {}, {}
    owners: dict[str, str] = {}
    listed: set[str] = set()
    for host in ordered:
        strict_host = is_strict(host)
        if wanted is not None and strict_host:
            listed.add(key_of(host, wanted) or "")
        try:
            declaration = key_of(host, declared)
            if declaration is not None:
                host = _declared_host(host, declared[declaration], plan.warnings)
            routes, backend_address = _host_routes(host)
            if not strict_host:
                _check_undeclared(routes, owners)
                _check_vouched(host, backend_address)
            _claim(routes, claims, sites, host, backend_address)
        except RecursionError:
            error = OptionError(f"{_where(host)}: user.mage.proxy is nested too deeply to be routes")
            if strict_host:
                raise error from None
            plan.warnings.append(f"{error}. Its routes are left out of mageproxy; the others are served. Fix: {FIX_ROUTE}")
            continue
        except OptionError as error:
            if strict_host:
                raise OptionError(error.head(), fix=error.fix or FIX_ROUTE) from None
            plan.warnings.append(f"{error.head()} Its routes are left out of mageproxy; the others are served. "
                                 f"Fix: {error.fix or FIX_ROUTE}")
            if SERVED_BY_DECLARED in error.reasons:
                plan.displaced.append(plan.warnings[-1])
            continue
        if strict_host:
            for index, route in enumerate(routes):
                owners.setdefault(route.server_name, f"declared instance '{route.instance}': proxy[{index}]")
        if routes and backend_address:
            plan.hosts.append(HostsEntry(address=backend_address.strip("[]"),
                                         name=hosts_file_name(host["name"], f"{_where(host)}: mage_lxd_instance")))
    # A declared instance the proxy was not given (not in the inventory, stopped out of it, or in a
    # project outside mageproxy_projects) would otherwise lose its routes without a word.
    for key in sorted((wanted or set()) - listed):
        plan.warnings.append(f"declared instance '{key}' is not among mageproxy's hosts (the inventory's "
                             "lxd group in mageproxy_projects), so none of its routes is served. Fix: check that "
                             "it exists and that its project is in mageproxy_projects, then rerun.")
    for site in sites.values():
        site.locations.sort(key=lambda item: (-len(item.path), item.path))
        _check_acme_paths(site)
    plan.sites = [sites[name] for name in sorted(sites)]
    plan.needs_files = [site for site in plan.sites
                        if site.tls_source or any(location.route.htpasswd for location in site.locations)]
    plan.acme = any(site.tls_source == "acme" for site in plan.sites)
    plan.names_hash = server_names_hash(site.server_name for site in plan.sites)
    plan.owners = {site.server_name: "; ".join(f"{location.declared_at} {site.server_name}{location.path}"
                                               for location in site.locations) for site in plan.sites}
    return plan


def _declared_host(host: Mapping[str, Any], routes: Any, warnings: list[str]) -> dict[str, Any]:
    """The host with its declared routes; a record on the instance that says otherwise is warned about."""
    recorded = host.get("routes") or []
    if _parsed(str(host["name"]), recorded) != _parsed(str(host["name"]), routes):
        warnings.append(f"{_where(host)}: its user.mage.proxy differs from its declaration; mageproxy serves the "
                        "declared routes. Fix: rerun site.yml (mage_lxd_instance writes the declared record back), "
                        "and check who changed it.")
    return {**host, "routes": routes}


def _parsed(instance: str, routes: Any) -> list[Route] | None:
    try:
        return [parse_route(instance, index, raw) for index, raw in enumerate(routes)] if isinstance(routes, list) else None
    except (OptionError, RecursionError):
        return None


def answers_probe(server_name: str) -> bool:
    """Whether nginx would hand mageproxy's own check (Host PROBE_HOST) to a site of this name
    rather than to the catch-all: the one way a route could make that check fail."""
    return _covers_name(server_name, PROBE_HOST)


def _covers_name(owned: str, name: str) -> bool:
    """Whether `name` would take requests meant for the site `owned`: nginx picks an exact name
    before a wildcard, and a longer wildcard before a shorter one; '*.example.org' matches names
    any number of labels deep."""
    return owned == name or (owned.startswith("*.") and name.endswith(owned[1:]))


def _check_undeclared(routes: list[Route], owners: Mapping[str, str]) -> None:
    """Refuse what only a declaration may do: site options, files on mageproxy, a declared name."""
    for index, route in enumerate(routes):
        where = f"instance '{route.instance}': proxy[{index}] {route.server_name}{route.path}"
        options = route.site_options()
        if options:
            raise OptionError(f"{where}: {', '.join(options)} may only come from a declaration (they change the "
                              "whole site or name a file on mageproxy), not from an instance's own record.",
                              fix=FIX_UNDECLARED)
        owner = next((f"{who} ({owned})" for owned, who in owners.items() if _covers_name(owned, route.server_name)), "")
        if owner:
            raise OptionError(f"{where}: {route.server_name} is served by {owner}; an undeclared instance may "
                              "serve no path of it.", fix=FIX_UNDECLARED, reasons={SERVED_BY_DECLARED})


def _check_vouched(host: Mapping[str, Any], address: str) -> None:
    """Refuse an undeclared instance's upstream that only the instance itself vouches for.

    `address_network` is the managed network whose subnet holds the address ("" when it sits on a
    NIC of an unmanaged network, where root inside chooses it freely: the host's LAN neighbour,
    say). A host without the key (a static inventory's) is the operator's own declaration."""
    if address and host.get("address_network") == "":
        raise OptionError(f"{_where(host)}: its address {address.strip('[]')} is on a NIC of an unmanaged network, "
                          "which only the instance itself vouches for, so an undeclared instance's routes are "
                          "never sent there.", fix="attach the instance to a managed network, or declare it in "
                          "lxd_provisioning_inventory (or mageproxy_strict_instances), then rerun.")


def _check_acme_paths(site: Site) -> None:
    """nginx refuses a second location at the ACME challenge path; one below it would take the challenge."""
    if site.tls_source != "acme":
        return
    for location in site.locations:
        if location.path.startswith(ACME_CHALLENGE):
            raise OptionError(f"{location.declared_at} {site.server_name}{location.path}: {ACME_CHALLENGE} is where "
                              f"mageproxy answers the ACME challenge of {site.server_name} (tls: acme); choose "
                              "another path.", fix=FIX_ROUTE)


def _where(host: Mapping[str, Any]) -> str:
    # Escaped: a name read from the inventory may hold a newline, and a message must stay one line.
    name = str(host["name"]).encode("unicode_escape").decode()
    project = host.get("project")
    return f"instance '{name}'" + (f" in project '{project}'" if project else "")


def _host_routes(host: Mapping[str, Any]) -> tuple[list[Route], str]:
    """One host's validated routes and its upstream address ('' when it serves nothing now)."""
    instance = str(host["name"])
    raw_routes = host.get("routes") or []
    if not isinstance(raw_routes, list):
        raise OptionError(f"{_where(host)}: user.mage.proxy must be a list of routes")
    routes = [parse_route(instance, index, raw) for index, raw in enumerate(raw_routes)]
    address = ""
    if routes and host.get("status") == "running" and host.get("address"):
        hosts_file_name(instance, f"{_where(host)}: mage_lxd_instance")
        address = upstream_address(host["address"], f"{_where(host)}: lxd_address")
    return routes, address


def _claim(routes: list[Route], claims: dict[tuple[str, str], Location], sites: dict[str, Site],
           host: Mapping[str, Any], address: str) -> None:
    """Add one host's routes to the sites, all or none: a clash raises before any is added."""
    fresh: dict[tuple[str, str], int] = {}
    for index, route in enumerate(routes):
        key = (route.server_name, route.path)
        location = claims.get(key)
        where = f"instance '{route.instance}': proxy[{index}] {route.server_name}{route.path}"
        if key in fresh:
            raise OptionError(f"{where} is already routed by proxy[{fresh[key]}] of the same instance")
        fresh[key] = index
        if location is not None and not (route.balance and location.route.balance):
            raise OptionError(f"{where} is already routed by {location.declared_at}; give one of them another "
                              "name or path, or set balance: true on every instance that serves it")
        if location is not None and route.settings() != location.route.settings():
            raise OptionError(f"{where} is balanced with {location.declared_at} but their settings differ; "
                              "make them the same")
        _check_tls(sites.get(route.server_name), route)
    for index, route in enumerate(routes):
        key = (route.server_name, route.path)
        if key not in claims:
            claims[key] = Location(path=route.path, upstream=upstream_name(*key), route=route,
                                   declared_at=f"instance '{route.instance}': proxy[{index}]")
            site = sites.setdefault(route.server_name, Site(server_name=route.server_name))
            site.locations.append(claims[key])
            _merge_tls(site, route)
        if address:
            claims[key].backends.append(Backend(instance=route.instance, address=address, port=route.port))


def _check_tls(site: Site | None, route: Route) -> None:
    if route.tls_cert and site is not None and site.tls_cert and \
            (site.tls_cert, site.tls_key) != (route.tls_cert, route.tls_key):
        raise OptionError(
            f"instance '{route.instance}': {route.server_name} has two different TLS certificates; one per server name"
        )


def _merge_tls(site: Site, route: Route) -> None:
    if not route.tls_cert:
        return
    _check_tls(site, route)
    if not site.tls_cert:
        site.tls_declared_at = f"instance '{route.instance}': route {route.server_name}{route.path}"
    site.tls_cert, site.tls_key, site.tls_source = route.tls_cert, route.tls_key, route.tls_source
    site.redirect_https = site.redirect_https or route.redirect_https
    site.hsts = max(site.hsts, route.hsts)
