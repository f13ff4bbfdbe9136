"""Backbones, data and loaders of sdrun-transfer, piece by piece (no training)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transfer_helpers import torch_threads

from sdrun.errors import ConfigError, DataError
from sdrun.transfer import detection, segmentation
from sdrun.transfer.backbone import create_features, open_backbone
from sdrun.transfer.config import TransferConfig
from sdrun.transfer.freezing import freeze
from sdrun.transfer.loader import TaskLoader
from sdrun.transfer.miou import IGNORE
from sdrun.transfer.tiny_voc import write_tiny_sbd
from sdrun.transfer.transforms import SegmentationTrain
from sdrun.transfer.voc_splits import open_detection, open_segmentation


def test_timm_resnet101_and_152_as_backbones():
    """On the meta device: the real architectures, no weights allocated."""
    cfg = TransferConfig(backbone="timm:resnet101")
    backbone = open_backbone("scratch:resnet101")
    with torch.device("meta"):
        features = freeze(create_features(backbone, None, None), 2, True)
        detector = detection.build_detector(features, (0.5,) * 3, (0.25,) * 3, cfg, True)
        dilated = create_features(open_backbone("scratch:resnet152"), None, 8)
        segmenter = segmentation.build_segmenter(dilated, cfg, True)
    assert detector.backbone.positions == [1, 2, 3, 4]  # strides 4..32, as torchvision's FPN
    assert detector.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    assert not any(p.requires_grad for p in features.layer1.parameters())  # frozen stage 1
    assert all(p.requires_grad for p in features.layer2.parameters())
    assert dilated.feature_info.reduction() == [2, 4, 8, 8, 8]  # output stride 8
    assert segmenter.classifier[0].convs[1][0].dilation == (12, 12)  # DeepLabV3's at stride 8


@pytest.mark.parametrize("name", ["resnet20", "densenet_bc100"])
def test_cifar_nets_give_feature_maps_for_both_heads(name: str):
    cfg = TransferConfig(backbone=f"scratch:{name}")
    cfg.task.fpn_channels, cfg.dataset.image_size, cfg.dataset.max_size = 16, 32, 48
    torch.manual_seed(0)
    backbone = open_backbone(cfg.backbone)
    with torch_threads(1), torch.no_grad():
        detector = detection.build_detector(create_features(backbone, None, None), (0.5,) * 3,
                                            (0.25,) * 3, cfg, False).eval()  # fmt: skip
        out = detector([torch.rand(3, 32, 40)])
        segmenter = segmentation.build_segmenter(create_features(backbone, None, 8), cfg, False)
        masks = segmenter.eval()(torch.rand(1, 3, 32, 32))["out"]
    assert detector.backbone.positions == [1, 2, 3]  # deepest map of strides 1, 2, 4
    assert set(out[0]) == {"boxes", "scores", "labels"}
    assert masks.shape == (1, 21, 32, 32)


def test_detection_levels_need_one_map_per_stride():
    assert detection.pick_levels([1, 1, 2, 4], chosen=False) == [1, 2, 3]
    assert detection.pick_levels([2, 4, 8, 16, 32], chosen=False) == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="task.out_indices"):
        detection.pick_levels([4, 8, 8], chosen=True)


def test_evaluation_shards_hold_every_image_exactly_once():
    class Indices(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> int:
            return i

    seen = []
    for rank in range(3):  # 8 images over 3 processes: 3, 3 and 2, no padding repeats
        loader = TaskLoader(Indices(), 2, train=False, collate=list, move=lambda b, d: b,
                            device=torch.device("cpu"), rank=rank, world_size=3)  # fmt: skip
        seen += [i for batch in loader.epoch(0) for i in batch]
    assert sorted(seen) == list(range(8))


def test_sbd_masks_join_voc_training_when_present(tmp_path: Path, voc_root: Path):
    pytest.importorskip("scipy")  # SBD's masks are .mat files
    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    voc_train = (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").read_text().split()
    assert open_segmentation(root, download=False, sbd=None).train_sets == "voc2012_train"
    with pytest.raises(DataError, match="dataset.sbd=true but"):
        open_segmentation(root, download=False, sbd=True)
    write_tiny_sbd(root, [voc_train[0], "sbd_0000", "sbd_0001"])  # one is also in VOC's train
    splits = open_segmentation(root, download=False, sbd=None)
    assert splits.train_sets == "voc2012_train+sbd_train_noval"
    assert len(splits.train) == len(voc_train) + 2  # VOC's own mask wins for the shared image
    image, mask = splits.train[len(voc_train)]
    assert mask.shape == image.shape[1:] and set(mask.unique().tolist()) <= set(range(21))
    assert len(open_segmentation(root, download=False, sbd=False).train) == len(voc_train)
    image, mask = open_segmentation(root, download=False, sbd=False).train[0]
    assert IGNORE in mask.unique().tolist()  # VOC's masks do have 255 borders


def test_detector_heads_decode_boxes_in_float32_under_bf16_autocast():
    """bf16 keeps 8 bits of mantissa: a box corner near 1000 px would move by up to 4 px."""
    cfg = TransferConfig(backbone="scratch:resnet20")
    cfg.task.fpn_channels, cfg.task.rois_per_image, cfg.dataset.image_size = 16, 16, 64
    torch.manual_seed(0)
    features = create_features(open_backbone(cfg.backbone), None, None)
    detector = detection.build_detector(features, (0.5,) * 3, (0.25,) * 3, cfg, False)
    seen = []
    predictor = detector.roi_heads.box_predictor
    predictor.register_forward_hook(lambda module, args, out: seen.append(args[0].dtype))
    target = {"boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0]]), "labels": torch.tensor([1])}
    with torch_threads(1), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = detector([torch.rand(3, 64, 80)], [target])
        with torch.no_grad():
            out = detector.eval()([torch.rand(3, 64, 80)])
    assert seen == [torch.float32, torch.float32]
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert out[0]["boxes"].dtype == torch.float32
    assert features.conv1.weight.dtype == torch.float32  # weights untouched by autocast


def test_difficult_objects_are_scored_but_never_trained_on(voc_root: Path):
    splits = open_detection(voc_root, download=False)
    train, test = splits.train, splits.test
    difficult = sum(int(a.difficult.sum()) for a in train.annotations)
    assert difficult > 0  # the tiny tree marks some objects difficult
    boxes = sum(len(train[i][1]["boxes"]) for i in range(len(train)))
    assert boxes == sum(len(a.labels) for a in train.annotations) - difficult
    assert all(
        train[i][1]["labels"].min() >= 1 for i in range(len(train)) if len(train[i][1]["labels"])
    )
    _, target = test[0]  # evaluation keeps them, flagged
    assert set(target) == {"boxes", "labels", "difficult", "index"} and target["index"] == 0


def test_segmentation_crops_pad_masks_with_255_and_add_no_labels():
    image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    mask = torch.zeros(20, 30, dtype=torch.uint8)
    mask[5:15, 5:25] = 7
    mask[4, 5:25] = IGNORE
    torch.manual_seed(0)
    out_image, out_mask = SegmentationTrain(48, (0.5, 2.0))(image, mask)
    assert out_image.shape == (3, 48, 48) and out_mask.shape == (48, 48)
    assert set(out_mask.unique().tolist()) <= {0, 7, IGNORE}  # nearest: no blended labels
    small_image, small_mask = SegmentationTrain(48, (1.0, 1.0))(image, mask)
    assert (small_mask == IGNORE).sum() >= 48 * 48 - 20 * 30  # the padding is ignored
    assert (small_image[:, small_mask == IGNORE] == 0).float().mean() > 0.9


def test_aux_head_adds_half_its_loss():
    cfg = TransferConfig(backbone="scratch:resnet20")
    cfg.task.name, cfg.task.aux_loss = "segmentation", True
    torch.manual_seed(0)
    model = segmentation.build_segmenter(
        create_features(open_backbone(cfg.backbone), None, None), cfg, False
    ).eval()  # no dropout: both forward passes agree
    x, masks = torch.rand(2, 3, 32, 32), torch.randint(0, 21, (2, 32, 32))
    with torch_threads(1):
        out = model(x)
        total, n = segmentation.loss(model, (x, masks))
    assert set(out) == {"out", "aux"} and n == 2
    ce = torch.nn.functional.cross_entropy
    expected = ce(out["out"], masks, ignore_index=IGNORE) + 0.5 * ce(
        out["aux"], masks, ignore_index=IGNORE
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_fine_tuning_clock_waits_for_the_device_once_per_epoch(monkeypatch):
    """As in sdrun's loop: one synchronize per epoch, before the clock is read."""
    from sdrun.runfolder.runtime import Runtime
    from sdrun.training.engine import LossStep, StepState, train_one_epoch
    from sdrun.transfer.schedule import FinetunePlan

    calls = []
    real = Runtime.synchronize
    monkeypatch.setattr(Runtime, "synchronize", lambda self: (calls.append(1), real(self)))
    model = torch.nn.Linear(4, 1)
    state = StepState(torch.optim.SGD(model.parameters(), lr=0.01), None, 0)
    batches = [torch.randn(2, 4) for _ in range(3)]
    result = train_one_epoch(
        model, LossStep(model, lambda m, x: (m(x).square().mean(), len(x))), batches, 3, state,
        FinetunePlan("step", 1, 3, 0.01), Runtime(torch.device("cpu"), None, False),
    )  # fmt: skip
    assert result.images == 6 and calls == [1]


def test_segmentation_batches_are_normalized_with_statistics_made_once(monkeypatch):
    """The mean and std go to the device once, not with every batch (a copy from host memory
    per batch makes the host wait for the GPU at each step)."""
    seen = []
    real = segmentation.normalize

    def spy(x, mean, std):
        seen.append((mean, std))
        return real(x, mean, std)

    monkeypatch.setattr(segmentation, "normalize", spy)
    move = segmentation.mover((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), channels_last=False)
    batch = (torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), torch.zeros(1, 2, 2))
    x1, _ = move(batch, torch.device("cpu"))
    x2, _ = move(batch, torch.device("cpu"))
    assert torch.allclose(x1, torch.tensor([2.5, 3.0, 3.5]).view(1, 3, 1, 1).expand(1, 3, 2, 2))
    assert torch.equal(x1, x2)
    assert all(isinstance(t, torch.Tensor) for t in seen[0])
    assert seen[0][0] is seen[1][0] and seen[0][1] is seen[1][1]


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_atto"])
def test_freezing_two_levels_freezes_the_stem_and_those_levels_only(name: str):
    """EfficientNet keeps every stage in one `blocks` container, ConvNeXt's feature net renames
    `stages.0` to `stages_0`: neither may freeze more, or fewer, than the levels asked for."""
    import timm

    features = timm.create_model(name, features_only=True, pretrained=False)
    frozen = freeze(features, 2, batch_norm=False)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}

    def params_of(level: int) -> set[str]:
        path = features.feature_info.info[level]["module"]
        prefixes = (path + ".", path.replace(".", "_") + ".")
        return {n for n, _ in frozen.named_parameters() if n.startswith(prefixes)}

    assert params_of(-1) and params_of(-1) <= trainable  # the last level trains
    assert next(iter(frozen.named_parameters()))[0] not in trainable  # the stem does not
    assert params_of(1) and not params_of(1) & trainable  # nor the second level


def test_segmentation_scores_do_not_depend_on_the_evaluation_batch(voc_root: Path):
    """The tiny val images differ in size, as VOC's do: padded to a batch's largest, an image's
    prediction would change with its batch (ASPP's image pooling averages over the padding),
    and so with dataset.eval_batch_size and the number of processes."""
    from sdrun.runfolder.runtime import Runtime
    from sdrun.transfer.transforms import collate_whole

    test = open_segmentation(voc_root, download=False, sbd=False).test
    assert len({tuple(test[i][0].shape) for i in range(len(test))}) > 1
    cfg = TransferConfig(backbone="scratch:resnet20")
    torch.manual_seed(0)
    features = create_features(open_backbone(cfg.backbone), None, None)
    model = segmentation.build_segmenter(features, cfg, False)
    with torch.no_grad():  # predict the tiny tree's classes (background + 4), not others
        model.classifier[-1].bias[5:] = -10.0
    move = segmentation.mover((0.5,) * 3, (0.25,) * 3, channels_last=False)
    runtime = Runtime(torch.device("cpu"), None, False)
    scores = []
    with torch_threads(1):
        for batch in (1, 2, 4):
            loader = TaskLoader(test, batch, train=False, collate=collate_whole, move=move,
                                device=torch.device("cpu"))  # fmt: skip
            scores.append(segmentation.evaluate(model, loader.epoch(0), runtime))
    assert scores[0]["test/images"] == len(test) and scores[0]["test/miou"] > 0
    assert scores[1] == scores[0] and scores[2] == scores[0]  # mIoU, pixel accuracy, per class


def test_training_boxes_past_the_image_are_clipped_with_a_warning(
    tmp_path: Path, voc_root: Path, caplog: pytest.LogCaptureFixture
):
    """A box with xmax beyond <size> (a few VOC files have one) would become negative
    coordinates when its image is flipped."""
    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    base = root / "VOCdevkit" / "VOC2007"
    first = (base / "ImageSets" / "Main" / "trainval.txt").read_text().split()[0]
    xml = base / "Annotations" / f"{first}.xml"
    text = xml.read_text()
    width = int(text.split("<width>")[1].split("<")[0])
    start = text.index("<xmax>") + len("<xmax>")
    xml.write_text(text[:start] + str(width + 30) + text[text.index("</xmax>") :])
    splits = open_detection(root, download=False, years=[2007])
    assert f"{xml} has a box outside its image's <size>" in caplog.text
    assert splits.train.annotations[0].boxes[0, 2] == width + 30  # as the file says (scoring)
    image, target = splits.train[0]
    assert target["boxes"][:, 2].max() <= image.shape[-1] == width
    flipped = detection_flip(image, target)
    assert flipped["boxes"].min() >= 0


def detection_flip(image: torch.Tensor, target: dict) -> dict:
    from sdrun.transfer.transforms import DetectionTrain

    flip = DetectionTrain()
    flip.flip.p = 1.0
    return flip(image, target)[1]


def test_detection_can_train_on_voc2007_alone(voc_root: Path):
    """dataset.years=[2007]: the "07" protocol, for those without VOC2012."""
    from sdrun.transfer.config import validate

    splits = open_detection(voc_root, download=False, years=[2007])
    assert splits.train_sets == "voc2007_trainval" and len(splits.train) == 8
    assert open_detection(voc_root, download=False).train_sets == (
        "voc2007_trainval+voc2012_trainval"
    )  # fmt: skip
    cfg = TransferConfig(backbone="scratch:resnet20")
    cfg.dataset.years = [2007]
    validate(cfg)
    cfg.dataset.years = [2011]
    with pytest.raises(ConfigError, match=r"dataset.years=\[2011\] must be distinct VOC years"):
        validate(cfg)
