"""data: rosbags -> training dataset (no rclpy here).

- ``bags.py``      reading rosbag2 (mcap / sqlite3, compressed or not) and ROS 1 bags through ``rosbags``
- ``sync.py``      zero-order hold onto the control-rate timeline, staleness, spans
- ``build.py``     ``genil-ros dataset build --config CFG BAGS... -o DIR`` (``build_dataset``)
- ``bag_streams.py`` pass 1 of a build: the task's topics as streams, read, stamped, checked
- ``entries.py``   one reader per task entry: message -> the entry's vector (joints, pose, wrench, vector,
                   commands)
- ``rotations.py`` quaternion / rotation matrix / 6-D rotation (Gram-Schmidt)
- ``store.py``     the on-disk episode store (``EpisodeStore``; the writer is in ``store_writer.py``)
- ``dataset.py``   the torch ``SequenceDataset`` and ``split_episodes``
- ``images.py``    image / joint-state decoding shared with the ROS nodes
- ``synthetic.py`` writing bags without ROS (tests, benchmarks)
"""
