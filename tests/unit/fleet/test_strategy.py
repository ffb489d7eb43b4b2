"""start-first or stop-first: the decision from the device's memory, the images' labels and
what runs; and the two compose projects (slots) a device's model runs in."""

from kit.fleet import compose
from kit.fleet.facts import DeviceFacts
from kit.fleet.rollout import START_FIRST, STOP_FIRST, choose_strategy
from kit.fleet.status import Deployment
from kit.labels import Fingerprint

GiB = 1 << 30


def fp(memory="512MiB", reuse=True):
    labels = {"kit.device": "cpu", "kit.optimization": "native", "kit.model_digest": "sha256:1",
              "kit.memory_limit": memory}
    if reuse:
        labels["kit.reuse_port"] = "true"
    return Fingerprint.from_labels(labels)


def running(reuse=True, labels=None, status="running"):
    return Deployment(container="c1", image="r@sha256:old", status=status, health="healthy",
                      env={"KIT_REUSE_PORT": "1"} if reuse else {}, labels=labels or {})


def facts(memory):
    return DeviceFacts(name="d", host="unix:///x", reachable=True, memory_bytes=memory)


def test_two_copies_that_fit_start_first():
    strategy, why = choose_strategy(fp("512MiB"), facts(4 * GiB), running())
    assert strategy == START_FIRST and why == "two copies fit: 1.5 GiB + 1.5 GiB <= 4.0 GiB"


def test_two_copies_that_do_not_fit_stop_first_and_the_old_image_label_counts():
    old = {"kit.device": "cpu", "kit.optimization": "native", "kit.model_digest": "sha256:0",
           "kit.memory_limit": "3GiB"}
    strategy, why = choose_strategy(fp("512MiB"), facts(4 * GiB), running(labels=old))
    assert strategy == STOP_FIRST and why == "two copies do not fit: 4.0 GiB + 1.5 GiB > 4.0 GiB of memory"


def test_stop_first_when_the_port_cannot_be_shared_or_nothing_runs():
    assert choose_strategy(fp(reuse=False), facts(64 * GiB), running())[1].startswith("the image cannot share")
    assert choose_strategy(fp(), facts(64 * GiB), running(reuse=False))[1].startswith(
        "the running container holds its port alone")
    assert choose_strategy(fp(), facts(64 * GiB), Deployment()) == (STOP_FIRST, "nothing serves there now")
    assert choose_strategy(fp(), facts(64 * GiB), running(status="exited"))[0] == STOP_FIRST
    assert choose_strategy(fp(), facts(0), running()) == (STOP_FIRST, "the device's memory is unknown")


def spec(**kw):
    return compose.ServiceSpec(fleet="lab", device="d", image="r@sha256:1", port=8501, nvidia=False, **kw)


def test_slots_are_projects_and_the_file_says_which():
    assert compose.project_name("lab") == "kit-lab" and compose.project_name("lab", compose.GREEN) == "kit-lab-green"
    assert compose.other_slot(compose.BLUE) == compose.GREEN and compose.other_slot(compose.GREEN) == compose.BLUE
    plain = compose.render(spec())
    assert "KIT_SLOT" not in plain and "KIT_REUSE_PORT" not in plain and compose.slot_of(plain) == compose.BLUE
    green = compose.render(spec(reuse_port=True, slot=compose.GREEN))
    assert "KIT_REUSE_PORT: '1'" in green and compose.slot_of(green) == compose.GREEN
    assert "Project: kit-lab-green" in green
    argv = compose.up_argv("lab", "f.yml", slot=compose.GREEN)
    assert argv[argv.index("-p") + 1] == "kit-lab-green"
