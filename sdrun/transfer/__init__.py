"""`sdrun-transfer`: fine-tune sdrun-trained (or timm, or random) backbones on PASCAL VOC
detection (Faster R-CNN + FPN, VOC07+12 -> VOC07 test, mAP@0.5) and segmentation (DeepLabV3,
VOC12 train (+SBD) -> VOC12 val, mIoU), in sdrun's run folders. See docs/TRANSFER.md.
"""
