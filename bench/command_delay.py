"""How late the commands of a recorded rollout are: observation-to-command delay and when commands take
effect, measured from the stamps in the bags (issue 14, item 3: delay-aware data).

For every bag (a folder of them, e.g. from ``genil-ros record-demos``):

- observation-to-command delay: for each command message (its header stamp if it has one, else its
  receive time), the age of the newest joint state (by header stamp) at that moment - what the commander
  could have seen. For a policy rollout that recorded ``~/predicted_chunk`` (stamp = the tick its window
  ended at), also each chunk's window-to-arrival delay.
- effect lag: the lag in ticks at which the measured joint positions best match the commanded ones
  (smallest mean absolute difference), i.e. when a command has taken effect.
- what it means for the dataset: ``genil-ros dataset build`` labels tick t with the command in force just
  before t + 1/rate, i.e. the command computed from the observation at t as long as the
  observation-to-command delay is under one tick. The script counts the commands that came later than that
  (their labels would land on the next tick, lagging the observation they answer).

    python bench/command_delay.py out/demos_check [--joint-topic /joint_states]
        [--command-topic /forward_position_controller/commands] [--chunk-topic /policy_node/predicted_chunk]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def read(bag_path, joint_topic, command_topic, chunk_topic, joints):
    from genil_ros.data.bags import header_stamp_ns, open_bag

    js_t, js_q, cmd_t, cmd_q, chunk_delay = [], [], [], [], []
    with open_bag(bag_path) as bag:
        for topic, t, raw in bag.messages([joint_topic, command_topic, chunk_topic]):
            msgtype = bag.topics[topic]
            if topic == joint_topic:
                m = bag.deserialize(raw, msgtype, topic)
                idx = [list(m.name).index(j) for j in joints] if joints else range(len(m.position))
                js_t.append(header_stamp_ns(raw))
                js_q.append([m.position[i] for i in idx])
            elif topic == command_topic:
                m = bag.deserialize(raw, msgtype, topic)
                if msgtype.endswith("JointTrajectory"):
                    cmd_t.append(header_stamp_ns(raw) or t)
                    cmd_q.append(list(m.points[0].positions))
                else:
                    cmd_t.append(t)
                    cmd_q.append(list(m.data))
            elif topic == chunk_topic:
                chunk_delay.append(t - header_stamp_ns(raw))
    return np.array(js_t), np.array(js_q), np.array(cmd_t), np.array(cmd_q), np.array(chunk_delay)


def effect_lag(js_t, js_q, cmd_t, cmd_q, period_ns, max_lag=6):
    """(lag in ticks with the smallest mean |q(t + lag) - command(t)|, that error per lag)."""
    errs = []
    for lag in range(max_lag + 1):
        at = cmd_t + lag * period_ns
        k = np.searchsorted(js_t, at, side="right") - 1
        ok = (k >= 0) & (at <= js_t[-1])
        errs.append(float(np.mean(np.abs(js_q[k[ok]] - cmd_q[ok][:, : js_q.shape[1]]))) if ok.any() else np.inf)
    return int(np.argmin(errs)), errs


def main(argv=None) -> int:
    from genil_ros.data.bags import find_bags, is_bag

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bags", help="a bag or a folder of bags")
    ap.add_argument("--joint-topic", default="/joint_states")
    ap.add_argument("--command-topic", default="/forward_position_controller/commands")
    ap.add_argument("--chunk-topic", default="/policy_node/predicted_chunk")
    ap.add_argument("--joints", default="shoulder_pan_joint,shoulder_lift_joint,elbow_joint,wrist_joint")
    ap.add_argument("--rate", type=float, default=10.0, help="control rate of the dataset (Hz)")
    args = ap.parse_args(argv)
    bags = [Path(args.bags)] if is_bag(args.bags) else find_bags(args.bags)
    joints = [j for j in args.joints.split(",") if j]
    period = int(1e9 / args.rate)
    delays, chunk_delays, lags, n_cmd = [], [], [], 0
    for b in bags:
        js_t, js_q, cmd_t, cmd_q, chunk_d = read(b, args.joint_topic, args.command_topic, args.chunk_topic, joints)
        if not len(js_t) or not len(cmd_t):
            print(f"{b}: no {args.joint_topic} or {args.command_topic} messages; skipped")
            continue
        order = np.argsort(js_t)
        js_t, js_q = js_t[order], js_q[order]
        k = np.searchsorted(js_t, cmd_t, side="right") - 1
        ok = k >= 0
        delays.extend((cmd_t[ok] - js_t[k[ok]]).tolist())
        chunk_delays.extend(chunk_d.tolist())
        lags.append(effect_lag(js_t, js_q, cmd_t, cmd_q, period)[0])
        n_cmd += len(cmd_t)
    if not delays:
        print("no commands found")
        return 1
    d = np.array(delays) / 1e6
    print(f"{len(bags)} bag(s), {n_cmd} commands at {args.rate:g} Hz ({period / 1e6:.0f} ms per tick)")
    print(f"observation-to-command delay: median {np.median(d):.1f} ms, p90 {np.percentile(d, 90):.1f} ms, "
          f"p99 {np.percentile(d, 99):.1f} ms, max {d.max():.1f} ms")
    late = float(np.mean(d >= period / 1e6))
    print(f"commands later than one tick after the observation they answer: {late:.1%} "
          f"(their dataset label would land one tick late)")
    if chunk_delays:
        c = np.array(chunk_delays) / 1e6
        med = float(np.median(c))
        print(f"policy chunks, window tick to arrival: median {med:.0f} ms ({med * args.rate / 1e3:.1f} ticks), "
              f"p90 {np.percentile(c, 90):.0f} ms")
    print(f"effect lag (measured joints best match the command after): {np.bincount(lags).tolist()} bags at 0, 1, "
          f"2... ticks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
