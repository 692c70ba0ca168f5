"""DataConfig: defaults, validation messages naming the field, OmegaConf structured-config round trip."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from sfclip.data import OPENAI_CLIP_MEAN, DataConfig


def test_defaults_are_valid_and_use_lists():
    cfg = DataConfig()
    assert cfg.crop_scale == [0.5, 1.0] and cfg.mean == list(OPENAI_CLIP_MEAN) and cfg.teacher_sizes == []
    assert not cfg.hflip and cfg.image_size == 224
    assert DataConfig(crop_scale=(0.3, 0.9)).crop_scale == [0.3, 0.9]  # tuples become lists


@pytest.mark.parametrize("kwargs, field", [
    ({"batch_size": 0}, "batch_size"),
    ({"workers": -1}, "workers"),
    ({"dataset_type": "parquet"}, "dataset_type"),
    ({"crop_scale": [0.9, 0.5]}, "crop_scale"),
    ({"crop_scale": [0.5]}, "crop_scale"),
    ({"ratio": [0.0, 1.0]}, "ratio"),
    ({"mean": [0.5, 0.5]}, "mean"),
    ({"std": [0.2, 0.0, 0.2]}, "std"),
    ({"teacher_sizes": [224, -1]}, "teacher_sizes"),
    ({"csv_separator": "::"}, "csv_separator"),
    ({"resampled": "yes"}, "resampled"),
    ({"num_samples": 1.5}, "num_samples"),
])
def test_bad_values_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"DataConfig\.{field}\b"):
        DataConfig(**kwargs)


def test_omegaconf_structured_round_trip_with_overrides():
    base = OmegaConf.structured(DataConfig)
    merged = OmegaConf.merge(base, OmegaConf.from_dotlist(
        ["train_data=/d/{0..9}.tar", "crop_scale=[0.4,1.0]", "teacher_sizes=[224,448]", "batch_size=32"]))
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, DataConfig)
    assert cfg.crop_scale == [0.4, 1.0] and cfg.teacher_sizes == [224, 448] and cfg.batch_size == 32
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(base, OmegaConf.from_dotlist(["no_such_key=1"]))
    with pytest.raises(ValueError, match="DataConfig.crop_scale"):
        OmegaConf.to_object(OmegaConf.merge(base, OmegaConf.from_dotlist(["crop_scale=[0.9,0.1]"])))
