"""Observation encoders: ResNet-18 image features with a spatial-softmax head, and the low-dim state.

As in Diffusion Policy: torchvision's ResNet-18 built without weights, every BatchNorm replaced by a
GroupNorm (BatchNorm and EMA weights do not mix), the global pool and classifier replaced by a
spatial-softmax keypoint head. Images are cropped to ``crop_ratio`` of their size: a random crop per
sample in training, the centre crop at inference. Pretrained weights come only from a local file.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
from torch import nn

from genil_ros.errors import CheckpointError

__all__ = ["SpatialSoftmax", "ImageEncoder", "ObsEncoder", "build_resnet18", "replace_batchnorm"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def replace_batchnorm(module: nn.Module, group_size: int = 16) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by GroupNorm with ``channels // group_size`` groups,
    keeping the affine weight and bias (so pretrained BatchNorm affine parameters carry over)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            gn = nn.GroupNorm(max(1, c // group_size), c)
            if child.affine:
                with torch.no_grad():
                    gn.weight.copy_(child.weight)
                    gn.bias.copy_(child.bias)
            setattr(module, name, gn)
        else:
            replace_batchnorm(child, group_size)
    return module


def _load_pretrained(net: nn.Module, path: str) -> None:
    p = os.path.expanduser(path)
    if not os.path.isfile(p):
        raise CheckpointError(f"{path}: pretrained backbone weights not found (policy.vision.pretrained_weights; "
                              "weights are never downloaded, give a local .pth or .safetensors file)")
    try:
        if p.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(p)
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
                sd = sd["state_dict"]
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        from genil_ros.policy.load_errors import load_error_reason

        raise CheckpointError(f"{path}: cannot read pretrained backbone weights ({load_error_reason(e)})") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: pretrained backbone weights are not a state dict")
    own = net.state_dict()
    used = {}
    for k, v in sd.items():
        k2 = k[len("module."):] if k.startswith("module.") else k
        if k2.startswith("fc."):
            continue  # the classifier head is not used
        if k2 in own and torch.is_tensor(v):
            if tuple(own[k2].shape) != tuple(v.shape):
                raise CheckpointError(f"{path}: {k2} has shape {tuple(v.shape)}, "
                                      f"the ResNet-18 expects {tuple(own[k2].shape)}")
            used[k2] = v
    # BatchNorm running statistics are optional (a GroupNorm-trained file has none)
    optional = ("running_mean", "running_var", "num_batches_tracked")
    needed = [k for k in own if not k.startswith("fc.") and not k.endswith(optional)]
    missing = [k for k in needed if k not in used]
    if missing:
        raise CheckpointError(f"{path}: not a ResNet-18 state dict ({len(missing)} of {len(needed)} tensors missing, "
                              f"e.g. {missing[:3]})")
    net.load_state_dict(used, strict=False)


def build_resnet18(group_norm: bool = True, pretrained_weights: Optional[str] = None) -> nn.Module:
    """ResNet-18 trunk (no pool, no classifier): (N, 3, H, W) -> (N, 512, H/32, W/32)."""
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    if pretrained_weights:
        _load_pretrained(net, pretrained_weights)  # into the BatchNorm layout; GroupNorm keeps the affine params
    net.fc = nn.Identity()
    if group_norm:
        replace_batchnorm(net)
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


class SpatialSoftmax(nn.Module):
    """Feature map (N, C, h, w) -> (N, 2K): the expected image coordinates of K learned keypoints."""

    def __init__(self, in_channels: int, num_keypoints: int):
        super().__init__()
        self.kp = nn.Conv2d(in_channels, num_keypoints, 1)
        self.num_keypoints = num_keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.kp(x)
        n, k, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        attn = torch.softmax(x.reshape(n, k, h * w).float(), dim=-1).to(x.dtype).reshape(n, k, h, w)
        ex = (attn.sum(dim=2) * xs).sum(-1)
        ey = (attn.sum(dim=3) * ys).sum(-1)
        return torch.stack([ex, ey], dim=-1).reshape(n, 2 * k)


class ImageEncoder(nn.Module):
    """uint8 (N, 3, H, W) -> (N, feature_dim). Random crop in train mode, centre crop in eval mode."""

    def __init__(self, height: int, width: int, crop_ratio: float = 0.9, feature_dim: int = 64,
                 num_keypoints: int = 32, group_norm: bool = True, pretrained_weights: Optional[str] = None):
        super().__init__()
        self.height, self.width = height, width
        self.crop_h = max(1, int(round(height * crop_ratio)))
        self.crop_w = max(1, int(round(width * crop_ratio)))
        self.backbone = build_resnet18(group_norm, pretrained_weights)
        self.imagenet_norm = bool(pretrained_weights)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.pool = SpatialSoftmax(512, num_keypoints)
        self.out = nn.Linear(2 * num_keypoints, feature_dim)
        self.feature_dim = feature_dim

    def crop(self, img: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        n, _, h, w = img.shape
        ch, cw = self.crop_h, self.crop_w
        if (ch, cw) == (h, w):
            return img
        if not self.training:
            top, left = (h - ch) // 2, (w - cw) // 2
            return img[:, :, top: top + ch, left: left + cw]
        tops = torch.randint(0, h - ch + 1, (n,), generator=generator).tolist()
        lefts = torch.randint(0, w - cw + 1, (n,), generator=generator).tolist()
        return torch.stack([img[i, :, top: top + ch, left: left + cw]
                            for i, (top, left) in enumerate(zip(tops, lefts))])

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {tuple(img.shape)}")
        x = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
        x = self.crop(x)
        if self.imagenet_norm:
            x = (x - self.mean) / self.std
        return self.out(self.pool(self.backbone(x)))


class ObsEncoder(nn.Module):
    """Normalised obs dict -> (B, T_o * obs_feature_dim): per step [state, cam_1 features, ...], flattened.

    ``obs["state"]`` (B, T_o, state_dim) must already be normalised; cameras are uint8 (B, T_o, 3, H, W).
    """

    def __init__(self, state_dim: int, cameras: Sequence, vision_cfg, n_obs_steps: int):
        super().__init__()
        self.state_dim = state_dim
        self.n_obs_steps = n_obs_steps
        self.camera_names = [c.name for c in cameras]
        self.camera_sizes = {c.name: (c.height, c.width) for c in cameras}
        self.share_backbone = bool(vision_cfg.share_backbone) and len(cameras) > 1
        sizes = {(c.height, c.width) for c in cameras}
        if self.share_backbone and len(sizes) > 1:
            raise ValueError("policy.vision.share_backbone needs all cameras to have the same size")

        def make(c):
            return ImageEncoder(c.height, c.width, vision_cfg.crop_ratio, vision_cfg.feature_dim,
                                vision_cfg.num_keypoints, vision_cfg.group_norm, vision_cfg.pretrained_weights)

        if self.share_backbone:
            self.image_encoders = nn.ModuleDict({"shared": make(cameras[0])})
        else:
            self.image_encoders = nn.ModuleDict({c.name: make(c) for c in cameras})
        self.feature_dim = state_dim + len(cameras) * (vision_cfg.feature_dim if cameras else 0)
        self.output_dim = self.feature_dim * n_obs_steps

    def forward(self, obs: dict) -> torch.Tensor:
        state = obs["state"]
        B, T = state.shape[:2]
        feats = {}
        for name in self.camera_names:
            img = obs[name]
            feats[name] = self.encode_frames(name, img.reshape(B * T, *img.shape[2:]))
        return self.assemble(state, feats)

    def encode_frames(self, name: str, frames: torch.Tensor) -> torch.Tensor:
        """Features of camera ``name``'s frames (N, 3, H, W) uint8 -> (N, feature_dim). Each frame's
        features depend on that frame only (GroupNorm, no batch statistics), so they can be computed
        ahead of time and cached."""
        return self.image_encoders["shared" if self.share_backbone else name](frames)

    def assemble(self, state: torch.Tensor, feats: dict) -> torch.Tensor:
        """The conditioning from the normalised state (B, T_o, D) and every camera's frame features
        (B * T_o, feature_dim), in camera order: (B, T_o * obs_feature_dim)."""
        B, T = state.shape[:2]
        parts = [state.reshape(B * T, -1)] + [feats[name] for name in self.camera_names]
        x = torch.cat([f.float() for f in parts], dim=-1) if len(parts) > 1 else parts[0]
        return x.reshape(B, T * x.shape[-1])
