"""Image sources: what a declaration says (parse_image), which server it means on LXD and on Incus
(server_for), how an alias is found in a simplestreams index (the servers' own rules), and the
resolver's refusals, on plain data."""

from __future__ import annotations

import copy
import re
import ssl
from pathlib import Path

import pytest
import yaml

from ansible_collections.mage.lxd.plugins.plugin_utils.batch import pull_gates
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.images import (
    INCUS_IMAGES,
    LXD_IMAGES,
    PROTOCOLS,
    UBUNTU_REMOTES,
    ImageResolver,
    ImageServer,
    ImageSource,
    find_alias,
    parse_image,
    protocol_for,
    server_for,
    simplestreams_images,
)
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import DEFAULT_IMAGE_SERVER, parse_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.provision import (
    ImagePull,
    InstanceFacts,
    InstancePlan,
    InstanceResult,
)

WHERE = "instance 'web1' in project 'default'"
ROOT = Path(__file__).resolve().parents[2]


def _item(ftype, sha, size=100, **extra):
    return {"ftype": ftype, "path": f"images/x/{sha}/{ftype}", "sha256": sha, "size": size, **extra}


# The shape of images.linuxcontainers.org's and images.lxd.canonical.com's images.json: split images
# (lxd.tar.xz + squashfs or disk-kvm.img, with the combined_* fingerprints), Incus's twins, and the
# lab's unified tarballs.
PRODUCTS = {
    "content_id": "images", "datatype": "image-downloads", "format": "products:1.0",
    "products": {
        "debian:bookworm:amd64:default": {
            "aliases": "debian/12/default,debian/12,debian/bookworm/default,debian/bookworm", "arch": "amd64",
            "os": "Debian", "release": "bookworm", "release_title": "bookworm", "variant": "default",
            "versions": {
                "20261130_05:24": {"items": {
                    "lxd.tar.xz": _item("lxd.tar.xz", "m-old", combined_squashfs_sha256="old-ct",
                                        **{"combined_disk-kvm-img_sha256": "old-vm"}),
                    "incus.tar.xz": _item("incus.tar.xz", "i-old", combined_squashfs_sha256="old-ct-incus"),
                    "root.squashfs": _item("squashfs", "r-old"),
                }},
                "20261201_05:24": {"items": {
                    "lxd.tar.xz": _item("lxd.tar.xz", "m-new", combined_squashfs_sha256="new-ct",
                                        **{"combined_disk-kvm-img_sha256": "new-vm"}),
                    "incus.tar.xz": _item("incus.tar.xz", "i-new", combined_squashfs_sha256="new-ct-incus"),
                    "root.squashfs": _item("squashfs", "r-new"),
                    "disk.qcow2": _item("disk-kvm.img", "d-new", size=300),
                }},
            },
        },
        "debian:bookworm:arm64:default": {
            "aliases": "debian/12,debian/bookworm", "arch": "arm64", "os": "Debian", "release": "bookworm",
            "release_title": "bookworm", "variant": "default",
            "versions": {"20261201_05:24": {"items": {
                "lxd.tar.xz": _item("lxd.tar.xz", "m-arm", combined_squashfs_sha256="arm-ct"),
                "root.squashfs": _item("squashfs", "r-arm"),
            }}},
        },
        "busybox:1:amd64:default": {
            "aliases": "busybox,busybox/1", "arch": "amd64", "os": "busybox", "release": "1",
            "versions": {"20261202_17:40": {"items": {
                "lxd_combined.tar.gz": _item("lxd_combined.tar.gz", "6d91efca0964aaaa"),
                "incus_combined.tar.gz": _item("incus_combined.tar.gz", "6d91efca0964aaaa"),
            }}},
        },
        "plan9:4:sparc:default": {"aliases": "plan9", "arch": "sparc", "versions": {}},
    },
}
INDEX = {"format": "index:1.0", "index": {"images": {
    "datatype": "image-downloads", "path": "streams/v1/images.json", "products": sorted(PRODUCTS["products"])}}}
CATALOG = {"streams/v1/images.json": PRODUCTS}
X86 = ["x86_64", "i686"]


@pytest.mark.parametrize(("value", "server", "expected"), [
    ("images:debian/12", "images", ImageSource("debian/12", remote="images")),
    ("ubuntu:24.04", "images", ImageSource("24.04", remote="ubuntu")),
    ("local:mage/debian-12", "images", ImageSource("mage/debian-12")),
    ("mine:web", "", ImageSource("web", remote="mine")),
    # The seed's shorthand and bare aliases: a local alias first, else the image_server's.
    ("debian/12/amd64", "images", ImageSource("debian/12/amd64", remote="images", local_first=True)),
    ("debian/12/amd64", None, ImageSource("debian/12/amd64", remote="images", local_first=True)),
    ("debian/12/amd64", "", ImageSource("debian/12/amd64")),
    ("debian/12", "https://images.example.org",
     ImageSource("debian/12", server="https://images.example.org", local_first=True)),
    ("debian/12", "ubuntu:", ImageSource("debian/12", remote="ubuntu", local_first=True)),
    ({"alias": "debian/12", "server": "https://i.example.org/", "protocol": "simplestreams"}, "",
     ImageSource("debian/12", server="https://i.example.org/")),
    ({"alias": "pub", "server": "https://10.0.0.1:8443", "protocol": "incus", "server_cert": "/s.crt"}, "",
     ImageSource("pub", server="https://10.0.0.1:8443", protocol="lxd", server_cert="/s.crt")),
    ({"alias": "mage/busybox"}, "images", ImageSource("mage/busybox")),
])
def test_every_form_the_clients_write_parses_to_one_source(value, server, expected):
    assert parse_image(value, server, WHERE) == expected


@pytest.mark.parametrize(("value", "server", "message"), [
    ({"alias": "debian/12", "protocol": "ftp", "server": "https://x.org"}, "", "image.protocol 'ftp'"),
    ({"alias": "debian/12", "server": "http://x.org"}, "", "image.server 'http://x.org' is not an https://"),
    ({"alias": "debian/12", "server": "https://"}, "", "is not an https:// URL with a host"),
    ({"alias": "debian/12", "mirror": "x"}, "", "unknown key(s) mirror"),
    ({"server": "https://x.org"}, "", "image alias '' is not an image alias"),
    ({"alias": "a", "server_cert": "/s.crt"}, "", "server_cert needs image.server"),
    ("https://x.org/debian", "", "is a URL"),
    ("debian 12", "", "image alias 'debian 12'"),
    ("images:", "", "image alias ''"),
    (24.04, "", "image is a float, not an alias"),
    ("debian/12", "ftp://x", "neither an https:// URL nor a remote name"),
    ("debian/12", "https://", "has no host"),
])
def test_a_wrong_source_is_refused_naming_the_instance(value, server, message):
    with pytest.raises(OptionError, match=r"instance 'web1'") as refused:
        parse_image(value, server, WHERE)
    assert message in str(refused.value) and "Fix:" in str(refused.value)


def test_the_task_default_and_a_null_role_variable_mean_the_images_remote():
    for declared in ({}, {"image_server": None}):
        spec = parse_spec({"name": "web1", "image": "debian/12", **declared})
        assert spec.image == ImageSource("debian/12", remote="images", local_first=True)


def test_images_means_lxds_server_on_lxd_and_incuss_on_incus():
    source = parse_image("images:debian/12", "", WHERE)
    assert server_for(source, "lxd", WHERE) == ImageServer(LXD_IMAGES)
    assert server_for(source, "incus", WHERE) == ImageServer(INCUS_IMAGES)
    ubuntu = parse_image("ubuntu:24.04", "", WHERE)
    assert server_for(ubuntu, "lxd", WHERE).url == "https://cloud-images.ubuntu.com/releases"
    with pytest.raises(OptionError, match="serve LXD only. Fix: on Incus use images:ubuntu/RELEASE"):
        server_for(ubuntu, "incus", WHERE)


def test_the_users_own_setting_wins_over_the_kinds_default():
    source = parse_image("debian/12", "https://mirror.example.org", WHERE)
    assert server_for(source, "incus", WHERE) == ImageServer("https://mirror.example.org")


def test_another_remote_name_is_the_cli_remote_of_that_name():
    looked_up = []

    def cli_remote(name, where):
        looked_up.append((name, where))
        return {"url": "https://img.example.org:8443", "protocol": "incus", "server_cert": "/c/servercerts/mine.crt"}

    server = server_for(parse_image("mine:web", "", WHERE), "lxd", WHERE, cli_remote)
    assert server == ImageServer("https://img.example.org:8443", "lxd", "/c/servercerts/mine.crt")
    assert looked_up == [("mine", WHERE)]
    assert protocol_for("incus", server.protocol) == "incus" and protocol_for("lxd", server.protocol) == "lxd"
    assert protocol_for("incus", "simplestreams") == "simplestreams"


def test_an_alias_names_the_newest_native_image_of_the_instances_type():
    images = simplestreams_images(INDEX, CATALOG, "lxd")
    assert find_alias(images, "debian/12", "container", X86)["fingerprint"] == "new-ct"
    assert find_alias(images, "debian/bookworm/default", "container", X86)["fingerprint"] == "new-ct"
    assert find_alias(images, "debian/12", "virtual-machine", X86)["fingerprint"] == "new-vm"
    # ALIAS/ARCH: the seed's shorthand.
    assert find_alias(images, "debian/12/amd64", "container", X86)["fingerprint"] == "new-ct"
    # An architecture the server cannot run is no match; on that architecture it is.
    assert find_alias(images, "debian/12/arm64", "container", X86) is None
    assert find_alias(images, "debian/12", "container", ["aarch64", "armv7l"])["fingerprint"] == "arm-ct"
    assert find_alias(images, "debian/13", "container", X86) is None
    # A unified tarball, and a fingerprint prefix instead of an alias.
    assert find_alias(images, "busybox/1/amd64", "container", X86)["fingerprint"] == "6d91efca0964aaaa"
    assert find_alias(images, "6d91efca0964", "container", X86)["fingerprint"] == "6d91efca0964aaaa"


def test_incus_reads_its_own_items_and_lxd_its_own():
    incus = simplestreams_images(INDEX, CATALOG, "incus")
    assert find_alias(incus, "debian/12", "container", X86)["fingerprint"] == "new-ct-incus"
    # The split VM image has no incus.tar.xz twin with a disk fingerprint here: Incus sees none.
    assert find_alias(incus, "debian/12", "virtual-machine", X86) is None
    assert {image["fingerprint"] for image in incus} == {"old-ct-incus", "new-ct-incus", "6d91efca0964aaaa"}


class FakeServer:
    """Answers the resolver's GETs from a dict; counts them; raises what a broken server would."""

    def __init__(self, answers, error=None):
        self.answers = answers
        self.error = error
        self.calls = []

    def __call__(self, url, server):
        self.calls.append(url)
        if self.error is not None:
            raise self.error
        if url not in self.answers:
            raise FileNotFoundError(url)
        return copy.deepcopy(self.answers[url])


LAB = ImageServer("https://127.0.0.1:18445")
LAB_ANSWERS = {f"{LAB.url}/streams/v1/index.json": INDEX, f"{LAB.url}/streams/v1/images.json": PRODUCTS}


def test_a_server_is_read_once_for_the_whole_batch():
    fake = FakeServer(LAB_ANSWERS)
    resolver = ImageResolver("lxd", X86, fetch=fake)
    first = resolver.resolve(LAB, "debian/12", "container", "instance 'a' in project 'p'")
    second = resolver.resolve(LAB, "busybox", "container", "instance 'b' in project 'p'")
    assert (first.fingerprint, second.fingerprint) == ("new-ct", "6d91efca0964aaaa")
    assert len(fake.calls) == 2  # index.json and images.json, once


def test_an_unknown_alias_is_refused_naming_instance_alias_and_server_with_what_it_has():
    resolver = ImageResolver("lxd", X86, fetch=FakeServer(LAB_ANSWERS))
    with pytest.raises(OptionError) as refused:
        resolver.resolve(LAB, "debain/12", "container", WHERE)
    message = str(refused.value)
    assert message.startswith(f"{WHERE}: image 'debain/12' on {LAB.url} (simplestreams): the server has no such")
    assert "debian/12" in message and "Fix:" in message


@pytest.mark.parametrize(("error", "words"), [
    (ConnectionRefusedError(111, "Connection refused"), "the server cannot be read"),
    (TimeoutError("timed out"), "the server cannot be read"),
    (ssl.SSLCertVerificationError("certificate verify failed: unable to get local issuer certificate"),
     "TLS verification failed"),
    (ValueError("Expecting value: line 1 column 1"), "the server cannot be read"),
])
def test_a_server_that_cannot_be_read_refuses_every_instance_that_needs_it(error, words):
    fake = FakeServer(LAB_ANSWERS, error=error)
    refuses_each_instance(ImageResolver("lxd", X86, fetch=fake), LAB, "debian/12", f"(simplestreams): {words}")
    assert len(fake.calls) == 1  # the failure is remembered, not retried per instance


def refuses_each_instance(resolver, server, alias, reason):
    """Instances a and b that need `alias` are each refused, each message naming its instance."""
    for name in ("a", "b"):
        where = f"instance '{name}' in project 'p'"
        with pytest.raises(OptionError) as refused:
            resolver.resolve(server, alias, "container", where)
        assert str(refused.value).startswith(f"{where}: image '{alias}' on {server.url} {reason}")


def test_a_failure_of_several_lines_is_named_by_its_first_and_the_message_stays_one_line():
    error = ValueError("Expecting value: line 1 column 1\n  while reading index.json\n  at byte 0")
    resolver = ImageResolver("lxd", X86, fetch=FakeServer(LAB_ANSWERS, error=error))
    with pytest.raises(OptionError) as refused:
        resolver.resolve(LAB, "debian/12", "container", WHERE)
    message = str(refused.value)
    assert "the server cannot be read (Expecting value: line 1 column 1). Fix:" in message and "\n" not in message
    resolver = ImageResolver("lxd", X86, fetch=FakeServer(LAB_ANSWERS, error=ValueError("")))
    with pytest.raises(OptionError, match=r"the server cannot be read \(ValueError\)"):
        resolver.resolve(LAB, "debian/12", "container", WHERE)


def test_a_page_that_is_not_an_index_is_refused():
    resolver = ImageResolver("lxd", X86, fetch=FakeServer({f"{LAB.url}/streams/v1/index.json": ["not", "one"]}))
    with pytest.raises(OptionError, match="is not a simplestreams index"):
        resolver.resolve(LAB, "debian/12", "container", WHERE)


def test_an_lxd_protocol_alias_is_its_public_target_of_the_instances_type():
    server = ImageServer("https://10.0.0.1:8443", "lxd")
    base = f"{server.url}/1.0/images"
    fake = FakeServer({f"{base}/aliases/mage-public%2Fbusybox": {"metadata": {"target": "8014a65f", "type": "container"}},
                       f"{base}/aliases/vm-only": {"metadata": {"target": "ffff", "type": "virtual-machine"}}})
    resolver = ImageResolver("incus", X86, fetch=fake)
    assert resolver.resolve(server, "mage-public/busybox", "container", WHERE).fingerprint == "8014a65f"
    for alias in ("vm-only", "nothing-here"):
        with pytest.raises(OptionError, match=rf"{WHERE}: image '{alias}' on https://10.0.0.1:8443 \(lxd\): the "
                                              "server has no public container image"):
            resolver.resolve(server, alias, "container", WHERE)


def test_an_lxd_protocol_alias_is_asked_once_for_the_batch_and_a_failure_too():
    server = ImageServer("https://10.0.0.1:8443", "lxd")
    base = f"{server.url}/1.0/images"
    fake = FakeServer({f"{base}/aliases/pub": {"metadata": {"target": "8014a65f", "type": "container"}}})
    resolver = ImageResolver("lxd", X86, fetch=fake)
    for name in ("a", "b", "c"):
        assert resolver.resolve(server, "pub", "container", f"instance '{name}' in project 'p'").fingerprint == "8014a65f"
    assert fake.calls == [f"{base}/aliases/pub"]
    broken = FakeServer({}, error=ConnectionRefusedError(111, "Connection refused"))
    refuses_each_instance(ImageResolver("lxd", X86, fetch=broken), server, "pub", "(lxd): the server cannot be read")
    assert len(broken.calls) == 1


def _plan(name, pull):
    spec = parse_spec({"name": name, "image": "mage/busybox"})
    return InstancePlan(spec=spec, facts=InstanceFacts(current=None, pull=pull),
                        result=InstanceResult(name=name, project="default"))


def test_the_first_instance_of_each_download_leads_it_and_the_others_follow():
    debian = ImagePull("f22c", "default", "debian/12", LAB.url)
    busybox = ImagePull("6d91", "default", "busybox", LAB.url)
    own_store = ImagePull("f22c", "shop", "debian/12", LAB.url)
    plans = [_plan("a", None), _plan("b", debian), _plan("c", busybox), _plan("d", debian), _plan("e", own_store)]
    leaders, gates = pull_gates(plans)
    assert {key: plan.spec.name for key, plan in leaders.items()} == {
        ("default", "f22c"): "b", ("default", "6d91"): "c", ("shop", "f22c"): "e"}
    assert set(gates) == set(leaders) and not any(gate.is_set() for gate in gates.values())


class FakeLxd:
    """The reads _image_source makes of the instance's server: aliases, images, projects."""

    def __init__(self, kind="lxd", have=(), aliases=(), own_images=False):
        from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote
        from ansible_collections.mage.lxd.plugins.plugin_utils.server_kind import INCUS, LXD
        self.kind = INCUS if kind == "incus" else LXD
        self.remote = Remote()
        self.host_info = {"environment": {"architectures": X86}}
        self.have = set(have)
        self.aliases = set(aliases)
        self.own_images = own_images
        self.requests = []

    def describe(self):
        return "LXD remote 'local'"

    def get(self, path, params=None):
        from ansible_collections.mage.lxd.plugins.plugin_utils.errors import NotFoundError
        self.requests.append(path)
        if path.startswith("images/aliases/") and path.removeprefix("images/aliases/") in self.aliases:
            return {"target": "local-fp"}
        if path.startswith("images/") and path.removeprefix("images/") in self.have:
            return {"fingerprint": path.removeprefix("images/")}
        if path.startswith("projects/"):
            return {"config": {"features.images": "true" if self.own_images else "false"}}
        raise NotFoundError(path)


def _source(api, image, project="default", new_project=False, answers=None):
    from ansible_collections.mage.lxd.plugins.plugin_utils.provision import _image_source
    spec = parse_spec({"name": "web1", "image": image, "project": project, "image_server": LAB.url})
    resolver = ImageResolver(api.kind.cli.replace("lxc", "lxd"), X86, fetch=FakeServer(LAB_ANSWERS if answers is None else answers))
    return _image_source(api, spec, WHERE, resolver, new_project)


def test_a_local_alias_wins_for_the_shorthand_and_no_image_server_is_read():
    api = FakeLxd(aliases={"debian/12/amd64"})
    assert _source(api, "debian/12/amd64", answers={}) == ({"type": "image", "alias": "debian/12/amd64"}, None)


def test_an_alias_to_download_is_pulled_by_alias_with_its_planned_fingerprint():
    api = FakeLxd()
    source, pull = _source(api, "debian/12/amd64", project="shop")
    assert source == {"type": "image", "mode": "pull", "server": LAB.url, "protocol": "simplestreams",
                      "alias": "debian/12/amd64"}
    assert pull == ImagePull("new-ct", "default", "debian/12/amd64", LAB.url)
    # A project with images of its own keeps its downloads apart; a new project uses the default's.
    assert _source(FakeLxd(own_images=True), "debian/12", project="shop")[1].store == "shop"
    assert _source(FakeLxd(own_images=True), "debian/12", project="shop", new_project=True)[1].store == "default"


def test_an_image_the_server_has_is_used_by_fingerprint_and_nothing_is_pulled():
    assert _source(FakeLxd(have={"new-ct"}), "debian/12") == ({"type": "image", "fingerprint": "new-ct"}, None)


def _module_options():
    source = (ROOT / "plugins" / "modules" / "mage_lxd_instance.py").read_text()
    return yaml.safe_load(source.split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0])["options"]


def test_the_module_docs_the_role_and_readme_say_what_the_code_does_with_image_server():
    # The action leaves documented defaults to the library: the documented one must be the code's.
    options = _module_options()
    role = ROOT / "roles" / "provisioning"
    role_defaults = (role / "defaults" / "main.yml").read_text()
    role_spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    variable = role_spec["lxd_provisioning_image_server"]
    assert options["image_server"]["default"] == DEFAULT_IMAGE_SERVER == "images"
    assert yaml.safe_load(role_defaults)["lxd_provisioning_image_server"] == variable["default"] == DEFAULT_IMAGE_SERVER
    assert 'image_server: "{{ lxd_provisioning_image_server }}"' in (role / "tasks" / "main.yml").read_text()
    # Each names the server that default is on LXD and on Incus, the right way round.
    texts = {"module": " ".join(options["image_server"]["description"]), "role spec": " ".join(variable["description"]),
             "role defaults": role_defaults, "README": (ROOT / "README.md").read_text()}
    for where, text in texts.items():
        text = " ".join(text.replace("#", " ").split())
        assert re.search(re.escape(LXD_IMAGES) + r"[)`]? on LXD\b", text), where
        assert re.search(re.escape(INCUS_IMAGES) + r"[)`]? on Incus\b", text), where
    image = " ".join(options["image"]["description"])
    assert all(f"C({name}:" in image for name in UBUNTU_REMOTES), "every ubuntu remote the code knows is documented"
    assert all(f"V({name})" in image for name in PROTOCOLS), "every protocol the code takes is documented"


@pytest.mark.parametrize(("kind", "url", "fingerprint"), [("lxd", LXD_IMAGES, "new-ct"), ("incus", INCUS_IMAGES, "new-ct-incus")])
@pytest.mark.parametrize("declared", [{}, {"image_server": None}, {"image_server": "images"}])
def test_the_shorthand_with_the_default_image_server_is_pulled_from_the_server_kinds_own(kind, url, fingerprint,
                                                                                         declared):
    # Left out, null (an unset role variable) or the role's default: LXD's server on LXD, Incus's on Incus.
    from ansible_collections.mage.lxd.plugins.plugin_utils.provision import _image_source
    spec = parse_spec({"name": "web1", "image": "debian/12/amd64", **declared})
    answers = {f"{url}/streams/v1/index.json": INDEX, f"{url}/streams/v1/images.json": PRODUCTS}
    fake = FakeServer(answers)
    source, pull = _image_source(FakeLxd(kind=kind), spec, WHERE, ImageResolver(kind, X86, fetch=fake), False)
    assert (source["server"], source["protocol"], source["alias"]) == (url, "simplestreams", "debian/12/amd64")
    assert (pull.fingerprint, pull.server) == (fingerprint, url)
    assert fake.calls and all(call.startswith(url + "/") for call in fake.calls)


def test_the_users_image_server_wins_on_either_kind():
    for kind in ("lxd", "incus"):
        source, _pull = _source(FakeLxd(kind=kind), "debian/12/amd64")
        assert source["server"] == LAB.url


def test_a_named_server_is_asked_even_when_a_local_alias_has_that_name(tmp_path):
    api = FakeLxd(kind="incus", aliases={"mage-public/busybox"})
    cert = tmp_path / "server.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    server = "https://10.0.0.1:8443"
    answers = {f"{server}/1.0/images/aliases/mage-public%2Fbusybox": {"metadata": {"target": "8014", "type": "container"}}}
    source, pull = _source(api, {"alias": "mage-public/busybox", "server": server, "protocol": "lxd",
                                 "server_cert": str(cert)}, answers=answers)
    # Incus names the image API protocol 'incus'; LXD is given the pinned certificate too.
    assert source["protocol"] == "incus" and source["certificate"] == cert.read_text()
    assert pull.fingerprint == "8014" and not any(path.startswith("images/aliases/") for path in api.requests)


@pytest.fixture
def https_index(tmp_path):
    """A simplestreams index served over HTTPS on loopback, with a certificate of a CA no store has."""
    import http.server
    import json
    import threading

    from ansible_collections.mage.lxd.tests.unit.tls_material import make_ca, make_leaf

    cert_pem, key_pem = make_leaf(make_ca(), ["127.0.0.1"])
    (tmp_path / "server.crt").write_text(cert_pem)
    (tmp_path / "server.key").write_text(key_pem)
    other_pem, _other_key = make_leaf(make_ca(), ["127.0.0.1"])
    (tmp_path / "other.crt").write_text(other_pem)
    files = {"/streams/v1/index.json": INDEX, "/streams/v1/images.json": PRODUCTS}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the base class's name
            body = json.dumps(files[self.path]).encode() if self.path in files else b"{}"
            self.send_response(200 if self.path in files else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tmp_path / "server.crt"), str(tmp_path / "server.key"))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_an_image_server_is_tls_checked_by_default_and_a_pin_must_match(https_index):
    url, directory = https_index
    resolver = ImageResolver("lxd", X86, timeout=5)
    # Its CA is in no store: refused, though it would answer.
    with pytest.raises(OptionError, match=rf"{WHERE}: image 'debian/12' on {re.escape(url)} \(simplestreams\): TLS "
                                          "verification failed .*Fix: add the server's CA"):
        resolver.resolve(ImageServer(url), "debian/12", "container", WHERE)
    pinned = ImageServer(url, server_cert=str(directory / "server.crt"))
    assert ImageResolver("lxd", X86, timeout=5).resolve(pinned, "debian/12", "container", WHERE).fingerprint == "new-ct"
    wrong = ImageServer(url, server_cert=str(directory / "other.crt"))
    with pytest.raises(OptionError, match="TLS verification failed .*is not this server's certificate"):
        ImageResolver("lxd", X86, timeout=5).resolve(wrong, "debian/12", "container", WHERE)
