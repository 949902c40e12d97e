"""customizationMap validation and application (SPEC §5)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from renderer.errors import InvalidCustomization
from renderer.template.customize import (
    apply_customizations,
    asset_kind_for_layer,
    customizable_properties,
    validate_customizations,
)
from renderer.template.loader import load_template_from_dict
from renderer.template.model import (
    CustomizationEntry,
    ImageLayer,
    LoadedTemplate,
    Template,
    TextLayer,
)


def _template_data() -> dict[str, Any]:
    return {
        "width": 64,
        "height": 36,
        "frames": 6,
        "layers": [
            {"id": "band", "type": "solid", "color": "#000000"},
            {
                "id": "headline",
                "type": "text",
                "text": "Hello",
                "color": "#ffffff",
                "box": {"x": 1, "y": 2, "w": 30, "h": 10},
            },
            {
                "id": "photo",
                "type": "image",
                "src": "images/photo.png",
                "fit": "contain",
                "radius": 3,
                "box": {"x": 10, "y": 4, "w": 20, "h": 20},
                "transform": {"opacity": [{"t": 0, "v": 0}, {"t": 4, "v": 1}]},
            },
            {"id": "bg", "type": "video", "src": "videos/bg.mp4"},
        ],
    }


@pytest.fixture()
def loaded(tmp_path: Path, fixtures_module: ModuleType) -> LoadedTemplate:
    fixtures_module.make_png(tmp_path / "images/photo.png", 8, 8)
    fixtures_module.make_video(tmp_path / "videos/bg.mp4", 16, 16, 30, 3)
    return load_template_from_dict(_template_data(), tmp_path)


@pytest.fixture()
def template() -> Template:
    data = _template_data()
    data["layers"].append({"id": "sticker", "type": "lottie", "src": "l.json"})
    return Template.model_validate(data)


# --- validation -------------------------------------------------------------------------------


def test_valid_entries_come_back_as_models(template: Template) -> None:
    entries = validate_customizations(
        template,
        [
            {"layerId": "headline", "text": "Hi Anna!"},
            {"layerId": "headline", "color": "#ffcc00"},
            CustomizationEntry(layer_id="band", color="#ff006680"),
            {"layerId": "photo", "assetId": "5b0c"},
            {"layerId": "bg", "assetId": "9d1e", "visible": False},
            {"layerId": "sticker", "visible": False},
            {"layerId": "sticker", "lottieText": {"Title": "SALE"}},
        ],
    )
    assert [e.layer_id for e in entries] == [
        "headline",
        "headline",
        "band",
        "photo",
        "bg",
        "sticker",
        "sticker",
    ]
    assert entries[0].text == "Hi Anna!"
    assert entries[3].asset_id == "5b0c"


def test_property_of_another_layer_type_names_the_entry(template: Template) -> None:
    with pytest.raises(InvalidCustomization) as info:
        validate_customizations(
            template,
            [
                {"layerId": "headline", "text": "ok"},
                {"layerId": "band", "color": "#fff"},
                {"layerId": "photo", "text": "nope"},
            ],
        )
    assert str(info.value).startswith(
        "customizationMap[2] (layerId 'photo'): property 'text' does not apply to an image layer"
    )
    assert "(it takes: assetId, visible)" in str(info.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"layerId": "band", "text": "x"}, "property 'text' does not apply to a solid layer"),
        ({"layerId": "band", "assetId": "a"}, "property 'assetId' does not apply to a solid"),
        ({"layerId": "headline", "assetId": "a"}, "'assetId' does not apply to a text layer"),
        ({"layerId": "bg", "color": "#fff"}, "'color' does not apply to a video layer"),
        ({"layerId": "sticker", "text": "x"}, "'text' does not apply to a lottie layer"),
        ({"layerId": "headline", "lottieText": {"a": "b"}}, "'lottieText' does not apply"),
    ],
)
def test_property_rules_per_layer_type(
    template: Template, entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidCustomization, match=message):
        validate_customizations(template, [entry])


def test_unknown_layer_lists_valid_ids(template: Template) -> None:
    with pytest.raises(InvalidCustomization) as info:
        validate_customizations(template, [{"layerId": "logo", "visible": False}])
    assert str(info.value) == (
        "customizationMap[0] (layerId 'logo'): the template has no layer 'logo' "
        "(layers: 'band', 'headline', 'photo', 'bg', 'sticker')"
    )


def test_long_id_lists_are_truncated() -> None:
    template = Template.model_validate(
        {
            "width": 64,
            "height": 36,
            "frames": 2,
            "layers": [{"id": f"l{i}", "type": "solid", "color": "#000"} for i in range(40)],
        }
    )
    with pytest.raises(InvalidCustomization, match=r"'l9', \.\.\. \(30 more\)\)$"):
        validate_customizations(template, [{"layerId": "nope", "visible": True}])


@pytest.mark.parametrize("entry", [{"layerId": "headline"}, {"layerId": "headline", "text": None}])
def test_entry_that_sets_nothing(template: Template, entry: dict[str, Any]) -> None:
    with pytest.raises(
        InvalidCustomization, match=r"customizationMap\[0\] \(layerId 'headline'\): sets nothing"
    ):
        validate_customizations(template, [entry])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"layerId": "band", "color": "red"}, r"\(layerId 'band'\): color: colour 'red' is not"),
        ({"layerId": "band", "colour": "#fff"}, r"\(layerId 'band'\): colour: unknown property"),
        ({"text": "x"}, r"customizationMap\[0\]: layerId: required"),
        ({"layerId": "headline", "visible": "maybe"}, "visible: Input should be a valid boolean"),
    ],
)
def test_malformed_entries(template: Template, entry: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidCustomization, match=message):
        validate_customizations(template, [entry])


def test_entries_must_be_objects_in_an_array(template: Template) -> None:
    with pytest.raises(InvalidCustomization, match=r"customizationMap\[0\]: must be an object"):
        validate_customizations(template, ["headline"])  # type: ignore[list-item]
    with pytest.raises(InvalidCustomization, match="must be an array"):
        validate_customizations(template, "headline")  # type: ignore[arg-type]


def test_asset_kind_and_customizable(template: Template) -> None:
    kinds = {layer.id: asset_kind_for_layer(layer) for layer in template.layers}
    assert kinds == {
        "band": None,
        "headline": None,
        "photo": "image",
        "bg": "video",
        "sticker": None,
    }
    assert customizable_properties("text") == ["text", "color", "visible"]
    assert customizable_properties("image") == ["assetId", "visible"]
    assert customizable_properties("image", public=False) == ["assetId", "src", "visible"]
    assert customizable_properties("lottie") == ["visible", "lottieText"]


# --- application ------------------------------------------------------------------------------


def test_apply_returns_new_objects_and_leaves_input_alone(loaded: LoadedTemplate) -> None:
    before = loaded.template.model_dump()
    entries = validate_customizations(
        loaded.template,
        [
            {"layerId": "headline", "text": "First"},
            {"layerId": "headline", "color": "#ffcc00"},
            {"layerId": "headline", "text": "Hi Anna!"},
            {"layerId": "band", "visible": False},
        ],
    )
    result = apply_customizations(loaded, entries)
    assert result is not loaded
    assert result.template is not loaded.template
    assert result.root == loaded.root
    assert loaded.template.model_dump() == before
    headline = result.template.layer("headline")
    assert isinstance(headline, TextLayer)
    assert (headline.text, headline.color) == ("Hi Anna!", "#ffcc00")
    assert headline.box == loaded.template.layer("headline").box  # type: ignore[union-attr]
    assert result.template.layer("band").visible is False  # type: ignore[union-attr]
    # Untouched layers are shared, touched ones are new objects.
    assert result.template.layer("bg") is loaded.template.layer("bg")
    assert headline is not loaded.template.layer("headline")


def test_replacement_image_keeps_box_fit_and_animation(
    loaded: LoadedTemplate, tmp_path: Path, fixtures_module: ModuleType
) -> None:
    upload = fixtures_module.make_png(tmp_path / "uploads" / "anna.png", 20, 10)
    result = apply_customizations(
        loaded, [CustomizationEntry(layer_id="photo", asset_id="a1", src=str(upload))]
    )
    old = loaded.template.layer("photo")
    new = result.template.layer("photo")
    assert isinstance(old, ImageLayer) and isinstance(new, ImageLayer)
    assert Path(new.src) == upload.resolve()
    assert result.path(new.src) == upload.resolve()
    assert (new.box, new.fit, new.radius, new.transform) == (
        old.box,
        old.fit,
        old.radius,
        old.transform,
    )
    assert old.src == "images/photo.png"


def test_replacement_relative_to_root(loaded: LoadedTemplate, fixtures_module: ModuleType) -> None:
    fixtures_module.make_png(loaded.root / "images/alt.png", 8, 8)
    result = apply_customizations(
        loaded, [CustomizationEntry(layer_id="photo", src="images/alt.png")]
    )
    assert result.path(result.template.layer("photo").src).name == "alt.png"  # type: ignore[union-attr]


def test_replacement_video(
    loaded: LoadedTemplate, tmp_path: Path, fixtures_module: ModuleType
) -> None:
    clip = fixtures_module.make_video(tmp_path / "clip.mp4", 16, 16, 24, 3)
    result = apply_customizations(loaded, [CustomizationEntry(layer_id="bg", src=str(clip))])
    assert result.template.layer("bg").src == str(clip.resolve())  # type: ignore[union-attr]


def test_asset_of_the_wrong_kind_is_refused(
    loaded: LoadedTemplate, tmp_path: Path, fixtures_module: ModuleType
) -> None:
    clip = fixtures_module.make_video(tmp_path / "clip.mp4", 16, 16, 24, 3)
    with pytest.raises(
        InvalidCustomization,
        match=r"customizationMap\[0\] \(layerId 'photo'\): the replacement is not a usable "
        r"image for this image layer: clip.mp4: not a readable image",
    ):
        apply_customizations(loaded, [CustomizationEntry(layer_id="photo", src=str(clip))])


def test_unresolved_asset_and_missing_files(loaded: LoadedTemplate, tmp_path: Path) -> None:
    with pytest.raises(InvalidCustomization, match="asset 'a1' was not resolved to a file"):
        apply_customizations(loaded, [CustomizationEntry(layer_id="photo", asset_id="a1")])
    with pytest.raises(InvalidCustomization, match="replacement file .* does not exist"):
        apply_customizations(
            loaded, [CustomizationEntry(layer_id="photo", src=str(tmp_path / "gone.png"))]
        )
    with pytest.raises(InvalidCustomization, match="must be an absolute path or a plain path"):
        apply_customizations(loaded, [CustomizationEntry(layer_id="photo", src="../x.png")])


def test_apply_validates_too(loaded: LoadedTemplate) -> None:
    with pytest.raises(InvalidCustomization, match="does not apply to a solid layer"):
        apply_customizations(loaded, [CustomizationEntry(layer_id="band", text="x")])


def test_apply_nothing_is_an_equal_copy(loaded: LoadedTemplate) -> None:
    result = apply_customizations(loaded, [])
    assert result == loaded
    assert result is not loaded


def test_lottie_text_is_checked_against_the_animation_and_kept_beside_the_template(
    tmp_path: Path, fixtures_module: ModuleType
) -> None:
    fixtures_module.make_png(tmp_path / "images/photo.png", 8, 8)
    fixtures_module.make_video(tmp_path / "videos/bg.mp4", 16, 16, 30, 3)
    fixtures_module.make_lottie(tmp_path / "l.json", text="HELLO")
    data = _template_data()
    data["layers"].append({"id": "sticker", "type": "lottie", "src": "l.json"})
    loaded = load_template_from_dict(data, tmp_path)
    custom = apply_customizations(
        loaded,
        [
            {"layerId": "headline", "text": "Hi"},  # type: ignore[list-item]
            CustomizationEntry(layer_id="sticker", lottie_text={"Title": "SALE"}),
        ],
    )
    assert custom.lottie_text == {"sticker": {"Title": "SALE"}}
    assert custom.template.layer("sticker") == loaded.template.layer("sticker")
    with pytest.raises(InvalidCustomization, match=r"'SubTitle' is not a text layer of l\.json"):
        apply_customizations(
            loaded, [CustomizationEntry(layer_id="sticker", lottie_text={"SubTitle": "x"})]
        )
