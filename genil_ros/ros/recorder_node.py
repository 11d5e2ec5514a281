"""Record ROS 2 topics into a rosbag2 (mcap by default) without ``ros2 bag`` / rosbag2_py.

Subscriptions are ``raw=True``: the CDR bytes are written as received, exactly as rosbag2 does (and
unlike ``rclpy.serialization.serialize_message`` of these wheels, whose output rosbags rejects). Message
definitions and type hashes come from the ``rosbags`` type store, so the bags are read by ``rosbags``,
``ros2 bag`` and Foxglove alike. Receive times come from the node's clock (``use_sim_time`` is obeyed).

Library use (e.g. a node that records scripted demonstrations)::

    from genil_ros.ros.recorder_node import BagRecorder
    rec = BagRecorder(node, "demos/episode_0000", ["/joint_states", "/camera/image_raw"])  # starts at once
    ...                               # spin the node as usual; callbacks write into the bag
    rec.stop()                        # closes the bag (metadata.yaml); rec.counts -> {topic: n}

Topic types are looked up in the ROS graph (topics that are not there yet are subscribed when they appear)
or given as ``{"/topic": "pkg/msg/Type"}``. The subscription QoS follows the publishers' (best effort when
any publisher is best effort, transient local when all are), as ``ros2 bag record`` does.

Command line::

    genil-ros record /joint_states /camera/image_raw /forward_position_controller/commands -o demo_01
    genil-ros record --config config/sim_task.yaml -o demo_01 --duration 60
    recorder_node --ros-args -p use_sim_time:=true -- /joint_states -o demo_01
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

from genil_ros.errors import GenilError

__all__ = ["BagRecorder", "add_arguments", "run", "main"]


def _message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise GenilError(f"not a message type: {msgtype!r} (expected pkg/msg/Type)")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError):
        raise GenilError(f"message type {msgtype} is not installed (no Python module {parts[0]}.{parts[1]})") from None


class BagRecorder:
    """Records ``topics`` seen by ``node`` into a new rosbag2 at ``out_path``.

    ``topics``: a list of topic names (types from the graph) or a mapping topic -> type.
    ``storage``: "mcap" (default) or "sqlite3"; ``compression``: None, "message" or "file" (zstd).
    Starts at once unless ``autostart=False`` (then call :meth:`start`). :meth:`stop` (alias
    :meth:`close`) closes the bag; it is also a context manager.
    """

    def __init__(self, node, out_path: Union[str, os.PathLike], topics: Union[Iterable[str], Mapping[str, str]], *,
                 storage: str = "mcap", compression: Optional[str] = None, depth: int = 100,
                 autostart: bool = True, discovery_period_s: float = 0.2):
        from rosbags.typesys import Stores, get_typestore

        self.node = node
        self.path = Path(out_path)
        if isinstance(topics, Mapping):
            self._types = {self._name(t): (None if ty is None else str(ty)) for t, ty in topics.items()}
        else:
            self._types = {self._name(t): None for t in topics}
        if not self._types:
            raise GenilError("record: no topics to record")
        if storage not in ("mcap", "sqlite3"):
            raise GenilError(f"record: storage {storage!r} must be mcap or sqlite3")
        if compression not in (None, "none", "message", "file"):
            raise GenilError(f"record: compression {compression!r} must be none, message or file")
        if self.path.exists():
            raise GenilError(f"{self.path}: already exists; rosbag2 output must be a new directory")
        self.storage = storage
        self.compression = None if compression == "none" else compression
        self.depth = depth
        self.discovery_period_s = discovery_period_s
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        self._lock = threading.Lock()
        self._writer = None
        self._conns: dict[str, object] = {}
        self._subs: dict[str, object] = {}
        self._timer = None
        self.counts: dict[str, int] = {t: 0 for t in self._types}
        self.bytes = 0
        self.started = False
        self.stopped = False
        if autostart:
            self.start()

    def _name(self, topic: str) -> str:
        topic = str(topic)
        if not topic.startswith("/"):
            ns = self.node.get_namespace().rstrip("/")
            topic = f"{ns}/{topic}"
        return topic

    # ------------------------------------------------------------------ control
    def start(self) -> "BagRecorder":
        if self.started:
            return self
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

        for topic, ty in self._types.items():
            if ty is not None and self._msgtype(ty) not in self._typestore.fielddefs:
                raise GenilError(f"record: {topic}: message type {ty} is unknown to the rosbags type store")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(self.path, version=9, storage_plugin=plugin)
        if self.compression:
            writer.set_compression(CompressionMode.MESSAGE if self.compression == "message" else CompressionMode.FILE,
                                   CompressionFormat.ZSTD)
        writer.open()
        self._writer = writer
        self.started = True
        self._discover()
        if any(t not in self._subs for t in self._types):
            self._timer = self.node.create_timer(self.discovery_period_s, self._discover)
        return self

    @staticmethod
    def _msgtype(ty: str) -> str:
        parts = ty.split("/")
        return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else ty

    def _graph_types(self) -> dict[str, list[str]]:
        return {name: types for name, types in self.node.get_topic_names_and_types()}

    def _qos(self, topic: str):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        reliability, durability = ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE
        try:
            infos = self.node.get_publishers_info_by_topic(topic)
        except Exception:
            infos = []
        if infos:
            if any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos):
                reliability = ReliabilityPolicy.BEST_EFFORT
            if all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos):
                durability = DurabilityPolicy.TRANSIENT_LOCAL
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.depth, reliability=reliability,
                          durability=durability)

    def _discover(self) -> None:
        if self.stopped:
            return
        graph = None
        for topic, ty in self._types.items():
            if topic in self._subs:
                continue
            if ty is None:
                graph = self._graph_types() if graph is None else graph
                types = graph.get(topic)
                if not types:
                    continue  # not in the graph yet: the timer looks again
                ty = types[0]
            self._subscribe(topic, self._msgtype(ty))
        if self._timer is not None and all(t in self._subs for t in self._types):
            self.node.destroy_timer(self._timer)
            self._timer = None

    def _subscribe(self, topic: str, msgtype: str) -> None:
        if msgtype not in self._typestore.fielddefs:
            raise GenilError(f"record: {topic}: message type {msgtype} is unknown to the rosbags type store")
        cls = _message_class(msgtype)
        with self._lock:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self._typestore)
        clock = self.node.get_clock()

        def callback(data: bytes, topic=topic) -> None:
            t = clock.now().nanoseconds
            with self._lock:
                if self._writer is None:
                    return
                self._writer.write(self._conns[topic], t, data)
                self.counts[topic] += 1
                self.bytes += len(data)

        self._subs[topic] = self.node.create_subscription(cls, topic, callback, self._qos(topic), raw=True)

    @property
    def subscribed(self) -> list[str]:
        """Topics with a subscription (the others are not in the graph yet)."""
        return sorted(self._subs)

    def stop(self) -> Path:
        """Stop recording and close the bag; returns its path. Safe to call twice."""
        if self.stopped:
            return self.path
        self.stopped = True
        if self._timer is not None:
            try:
                self.node.destroy_timer(self._timer)
            except Exception:
                pass
            self._timer = None
        for sub in self._subs.values():
            try:
                self.node.destroy_subscription(sub)
            except Exception:  # the context may already be shut down (Ctrl-C)
                pass
        self._subs.clear()
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        return self.path

    close = stop

    def __enter__(self) -> "BagRecorder":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False


# --------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    parser.add_argument("topics", nargs="*", metavar="TOPIC",
                        help="topics to record, each optionally TOPIC:pkg/msg/Type (default type: from the graph)")
    parser.add_argument("-o", "--output", default=None,
                        help="bag directory to create (default rosbag2_YYYY_MM_DD-HH_MM_SS)")
    parser.add_argument("--config", default=None,
                        help="experiment YAML: also record every observation topic and command topic of its task")
    parser.add_argument("-s", "--storage", choices=["mcap", "sqlite3"], default="mcap")
    parser.add_argument("--compression-mode", choices=["none", "message", "file"], default="none",
                        help="zstd compression of each message or of the whole file")
    parser.add_argument("-d", "--duration", type=float, default=None, help="stop after this many seconds (wall)")
    parser.add_argument("--max-messages", type=int, default=None, help="stop after this many messages in all")
    parser.add_argument("--use-sim-time", action="store_true", help="stamp receive times with /clock")
    parser.add_argument("--node-name", default="genil_recorder")


def _topics_from_args(args) -> dict:
    topics: dict[str, Optional[str]] = {}
    if args.config:
        from genil_ros.config import load_config
        from genil_ros.paths import config_path

        task = load_config(config_path(args.config)).task
        # every observation entry's topic and every command topic (a joint_names-form task is expanded
        # into entries too: /joint_states, its cameras, dataset.action_topic when action_source is command);
        # types come from the graph: a command topic may carry any of its entry type's message kinds
        for entry in task.observations:
            topics[entry.resolved_topic] = None
        for entry in task.actions:
            if entry.source == "command" and entry.topic:
                topics[entry.topic] = None
    for t in args.topics:
        name, _, ty = t.partition(":")
        topics[name] = ty or None
    if not topics:
        raise GenilError("record: give topics to record (or --config)")
    return topics


def run(args, ros_args: Optional[list] = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from genil_ros.ros.runner import ignore_shutdown_signals

    topics = _topics_from_args(args)
    out = args.output or time.strftime("rosbag2_%Y_%m_%d-%H_%M_%S")
    if Path(out).exists():
        raise GenilError(f"{out}: already exists; give a new output directory (-o)")
    _sigterm_as_interrupt()
    rclpy.init(args=ros_args)
    node = None
    rec = None
    try:
        overrides = [Parameter("use_sim_time", Parameter.Type.BOOL, True)] if args.use_sim_time else []
        node = rclpy.create_node(args.node_name, parameter_overrides=overrides)
        typed = {t: ty for t, ty in topics.items()}
        rec = BagRecorder(node, out, typed, storage=args.storage, compression=args.compression_mode)
        node.get_logger().info(f"recording {sorted(topics)} into {out}")
        print(f"recording {len(topics)} topic(s) into {out} (Ctrl-C to stop)", flush=True)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        t_end = None if args.duration is None else time.monotonic() + args.duration
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
            if t_end is not None and time.monotonic() >= t_end:
                break
            if args.max_messages is not None and sum(rec.counts.values()) >= args.max_messages:
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise  # else a signal's shutdown raced the executor (RCLError "context is not valid"): a normal stop
    finally:
        ignore_shutdown_signals()  # a second Ctrl-C (launch forwards one) must not cut the bag's closing short
        if rec is not None:
            rec.stop()
            missing = [t for t, n in rec.counts.items() if n == 0]
            print(f"wrote {out}: " + ", ".join(f"{t} {n}" for t, n in sorted(rec.counts.items())), flush=True)
            if missing:
                print(f"warning: no messages on {missing}", flush=True)
        if node is not None:
            try:
                node.destroy_node()
            except Exception:
                pass
        rclpy.try_shutdown()
        ignore_shutdown_signals()  # try_shutdown put back the handlers rclpy.init had replaced
    return 0


def _sigterm_as_interrupt() -> None:
    """SIGTERM closes the bag like Ctrl-C does (only possible from the main thread)."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


def main(argv: Optional[list] = None) -> int:
    """`recorder_node` console script: ROS arguments (--ros-args ...) are passed to rclpy."""
    import argparse
    import sys

    argv = list(sys.argv if argv is None else argv)
    from rclpy.utilities import remove_ros_args

    plain = remove_ros_args(args=argv)[1:]
    parser = argparse.ArgumentParser(prog="recorder_node", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(plain)
    try:
        return run(args, ros_args=argv)
    except GenilError as e:
        print(f"recorder_node: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    import sys

    sys.exit(main())
