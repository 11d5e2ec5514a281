"""genil_ros: generative imitation learning (diffusion policy, GAIL, AMP) for ROS 2 robot arms.

This is an ament_python package: `colcon build` in a ROS 2 workspace uses this file, and so does
`pip install -e .[ml,ros,dev]` in a plain virtual environment (scripts/bootstrap.sh).
Dependencies are declared here once; package.xml mirrors the ROS-side ones for rosdep.
"""

import os
from glob import glob

from setuptools import find_packages, setup

package_name = "genil_ros"


def tree(src):
    """(install_dir, [files]) pairs for every file under src, keeping the layout."""
    out = {}
    for path in glob(os.path.join(src, "**", "*"), recursive=True):
        if os.path.isfile(path) and "__pycache__" not in path:
            out.setdefault(os.path.join("share", package_name, os.path.dirname(path)), []).append(path)
    return sorted(out.items())


ML = [
    "numpy>=1.24",
    "pyyaml>=6",
    "torch>=2.3",
    "torchvision>=0.18",
    "diffusers>=0.30",
    "safetensors>=0.4",
    "opencv-python-headless>=4.8",
    "rosbags>=0.10",
    "backports.zstd; python_version<'3.14'",  # the dataset store's chunk compression (zstd)
    "mujoco>=3.1",
    "tqdm>=4.66",
    "tensorboard>=2.15",
    "matplotlib>=3.7",
    "imageio>=2.31",
    # ONNX export (torch's exporter needs onnxscript) and the ONNX Runtime backend
    "onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18",
]
# rclpy and the message packages: from a sourced ROS 2 install when there is one, otherwise the
# ROS 2 (Kilted) wheels on PyPI, which give real rclpy over real Fast DDS in a plain venv.
ROS = [
    "ros-rclpy",
    "ros-rmw-fastrtps-cpp",
    "ros-builtin-interfaces",
    "ros-rosgraph-msgs",
    "ros-rcl-interfaces",
    "ros-sensor-msgs",
    "ros-std-msgs",
    "ros-std-srvs",
    "ros-trajectory-msgs",
    "ros-diagnostic-msgs",
    "ros-lifecycle-msgs",
]
# xacro: test/test_launch.py expands the Gazebo URDF; ruff: the linter `make test` runs first (ruff.toml)
DEV = ["pytest>=7", "pytest-timeout>=2", "xacro>=2", "ruff>=0.6"]

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    package_data={package_name: ["sim/assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ]
    + tree("launch")
    + tree("config")
    + tree("models"),
    python_requires=">=3.10",
    install_requires=[],  # a ROS install provides what colcon needs; pip users pick extras below
    extras_require={"ml": ML, "ros": ROS, "dev": DEV, "all": ML + ROS + DEV},
    zip_safe=False,
    maintainer="genil_ros developers",
    maintainer_email="genil-ros@example.org",
    description="Diffusion policy, GAIL and AMP imitation learning for ROS 2 robot arms",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "genil-ros = genil_ros.cli:main",
            "policy_node = genil_ros.ros.policy_node:main",
            "sim_node = genil_ros.ros.sim_node:main",
            "trainer_node = genil_ros.ros.trainer_node:main",
            "recorder_node = genil_ros.ros.recorder_node:main",
            "rollout_recorder = genil_ros.ros.rollout_recorder:main",
            "finetune_node = genil_ros.ros.finetune_node:main",
        ],
    },
)
