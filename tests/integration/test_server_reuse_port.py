"""Two real servers on one port (KIT_REUSE_PORT=1): what a start-first `kit rollout`
does on a device, without Docker. The new server takes no connection before it is
ready; the old one, on SIGTERM, serves what it accepted and what waits in its
backlog, then exits; a client sending requests back to back sees no failure.

Model: TensorFlow Serving's half_plus_two (test data, no training)."""

import http.client
import json
import threading
import time

import pytest

from testkit.server import ServerProcess as Server
from tests.integration.test_server import HALF_PLUS_TWO

pytestmark = [pytest.mark.tf, pytest.mark.slow]


class Client(threading.Thread):
    """Predictions back to back, a new connection each; keeps (slot, status) or the error."""

    def __init__(self, port, pause=0.005):
        super().__init__(daemon=True)
        self.port, self.pause, self.results, self.errors = port, pause, [], []
        self.stopped = threading.Event()

    def run(self):
        body = json.dumps({"instances": [[1.0], [2.0]]})
        while not self.stopped.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("POST", "/v1/models/half_plus_two:predict", body=body,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                if r.status != 200 or json.loads(data)["predictions"] != [[2.5], [3.0]]:
                    self.errors.append((r.status, data[:200]))
                self.results.append((time.monotonic(), r.getheader("Kit-Slot")))
            except Exception as e:  # refused, reset, timeout: all count
                self.errors.append((round(time.monotonic(), 3), repr(e)))
            finally:
                conn.close()
            time.sleep(self.pause)

    def slots(self, since=0.0):
        return [s for t, s in self.results if t >= since]


def test_second_server_shares_the_port_takes_over_and_no_request_fails():
    old = Server(HALF_PLUS_TWO, "half_plus_two", "1", env={"KIT_REUSE_PORT": "1", "KIT_SLOT": "blue"}).wait_ready(180)
    client = Client(old.port)
    client.start()
    new = Server(HALF_PLUS_TWO, "half_plus_two", "1", port=old.port, grpc_port=old.grpc_port,
                 env={"KIT_REUSE_PORT": "1", "KIT_SLOT": "green", "KIT_TEST_WARMUP_DELAY": "2"})
    try:
        deadline = time.monotonic() + 120
        while "green" not in client.slots() and time.monotonic() < deadline:
            assert new.proc.poll() is None, new.logs()
            time.sleep(0.05)
        assert "green" in client.slots(), new.logs()
        # the new server answered nothing before it was ready (it was loading and warming up)
        assert "listening on 127.0.0.1:%d" % old.port in new.logs()
        assert old.stop() == 0  # SIGTERM: drain, exit
        switched = time.monotonic()
        time.sleep(1.0)
        client.stopped.set()
        client.join()
        assert client.errors == []
        assert set(client.slots()) == {"blue", "green"}
        assert set(client.slots(since=switched + 0.1)) == {"green"}
        assert len(client.slots(since=switched)) > 10
    finally:
        client.stopped.set()
        assert new.stop() == 0


SWITCHES = 4
HAMMERS = 3  # client threads opening a new connection per request, back to back


def test_many_switches_under_a_stream_of_new_connections_reset_none():
    """The race of a start-first switch: a connection that lands in the old server's backlog
    after its last accept() is reset when it closes. The new server, once ready, steers every
    new connection to itself (SO_ATTACH_REUSEPORT_CBPF), so the old backlog is empty by then."""
    slots = ["blue", "green"]
    old = Server(HALF_PLUS_TWO, "half_plus_two", "1", env={"KIT_REUSE_PORT": "1", "KIT_SLOT": "blue"}).wait_ready(180)
    clients = [Client(old.port, pause=0.0) for _ in range(HAMMERS)]
    for client in clients:
        client.start()
    servers = [old]
    try:
        for switch in range(1, SWITCHES + 1):
            slot = slots[switch % 2]
            new = Server(HALF_PLUS_TWO, "half_plus_two", "1", port=old.port, grpc_port=old.grpc_port,
                         env={"KIT_REUSE_PORT": "1", "KIT_SLOT": slot})
            servers.append(new)
            began = time.monotonic()
            while not all(slot in c.slots(since=began) for c in clients) and time.monotonic() < began + 180:
                assert new.proc.poll() is None, new.logs()
                time.sleep(0.05)
            assert "new connections on the shared port come here" in new.logs()
            # steered: from the first answer by the new server on, the old one answers none
            time.sleep(1.0)
            first = min(t for c in clients for t, s in c.results if s == slot and t >= began)
            assert {s for c in clients for t, s in c.results if t > first + 0.5} == {slot}
            assert old.stop() == 0  # SIGTERM: drain what it accepted, close, exit
            servers.remove(old)
            old = new
        time.sleep(0.3)
        for client in clients:
            client.stopped.set()
            client.join()
        errors = [e for c in clients for e in c.errors]
        answered = sum(len(c.results) for c in clients)
        assert (errors, answered > 100 * SWITCHES) == ([], True), (errors[:5], answered)
    finally:
        for client in clients:
            client.stopped.set()
        for server in servers:
            assert server.stop() == 0


class GrpcClient(Client):
    """TF Serving's own client (tensorflow-serving-api), a NEW channel per Predict, back to back;
    keeps (when, kit-slot metadata) or the error."""

    def run(self):
        import grpc
        import numpy as np
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half_plus_two"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.0]], np.float32)))
        while not self.stopped.is_set():
            channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
            try:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                response, call = stub.Predict.with_call(request, timeout=10)
                y = tf.make_ndarray(response.outputs["y"]).ravel().tolist()
                if y != [2.5, 3.0]:
                    self.errors.append(("wrong answer", y))
                self.results.append((time.monotonic(), dict(call.initial_metadata()).get("kit-slot")))
            except Exception as e:  # UNAVAILABLE, reset, deadline: all count
                self.errors.append((round(time.monotonic(), 3), repr(e)[:300]))
            finally:
                channel.close()
            time.sleep(self.pause)


def test_grpc_clients_move_to_the_new_server_and_none_fails():
    """The same switch for gRPC: grpcio owns that socket, so the new server steers its port through
    /proc (reuseport.steer_port). A new channel goes to the new server once it is ready, and the
    old one's SIGTERM fails no RPC. With KIT_REUSE_PORT_STEER=0 on both servers (no program on the
    group, as before gRPC was steered) the old one keeps answering and the test fails."""
    old = Server(HALF_PLUS_TWO, "half_plus_two", "1", env={"KIT_REUSE_PORT": "1", "KIT_SLOT": "blue"}).wait_ready(180)
    clients = [GrpcClient(old.grpc_port, pause=0.0) for _ in range(2)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 60
    while not all("blue" in c.slots() for c in clients) and time.monotonic() < deadline:
        time.sleep(0.05)  # both answered by the old server before the new one starts
    new = Server(HALF_PLUS_TWO, "half_plus_two", "1", port=old.port, grpc_port=old.grpc_port,
                 env={"KIT_REUSE_PORT": "1", "KIT_SLOT": "green", "KIT_TEST_WARMUP_DELAY": "2"})
    try:
        began = time.monotonic()
        while not all("green" in c.slots() for c in clients) and time.monotonic() < began + 180:
            assert new.proc.poll() is None, new.logs()
            time.sleep(0.05)
        steered = "gRPC listening on 127.0.0.1:%d (new connections on the shared port come here)" % old.grpc_port
        while steered not in new.logs() and time.monotonic() < began + 180:
            time.sleep(0.05)  # grpcio answers as soon as it starts: the steering (and its log line) follow
        assert steered in new.logs(), new.logs()
        assert all("blue" in c.slots() for c in clients)
        time.sleep(1.0)
        first = min(t for c in clients for t, s in c.results if s == "green")
        assert {s for c in clients for t, s in c.results if t > first + 0.5} == {"green"}
        assert old.stop() == 0  # SIGTERM: gRPC refuses new RPCs, finishes those in flight, exits
        switched = time.monotonic()
        time.sleep(1.0)
        for client in clients:
            client.stopped.set()
            client.join()
        errors = [e for c in clients for e in c.errors]
        after = sum(len(c.slots(since=switched)) for c in clients)
        assert (errors, after > 10) == ([], True), (errors[:5], after)
    finally:
        for client in clients:
            client.stopped.set()
        assert new.stop() == 0


def test_a_port_held_without_reuse_port_is_refused_at_start():
    plain = Server(HALF_PLUS_TWO, "half_plus_two", "1").wait_ready(180)
    try:
        second = Server(HALF_PLUS_TWO, "half_plus_two", "1", port=plain.port, env={"KIT_REUSE_PORT": "1"})
        assert second.proc.wait(60) == 1
        assert "cannot listen on 127.0.0.1:%d" % plain.port in second.logs()
    finally:
        assert plain.stop() == 0
