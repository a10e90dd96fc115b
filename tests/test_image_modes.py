""" Every PIL image mode becomes the right 8-bit RGB pixels (or a clear refusal), in training, eval and embed alike.

The expected pixels are worked out by hand (or with numpy) here, never by calling `to_rgb`. Compositing onto white
is round(colour * alpha / 255 + 255 * (255 - alpha) / 255); scaling rounds to nearest, halves up.
"""
import random

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

import sfsc_timm
from sfsc_timm.data import build_transforms, to_rgb
from sfsc_timm.inference import embed_images, read_embeddings
from sfsc_timm.inference.cli import main as embed_main
from sfsc_timm.inference.embed import _TransformedImages
from sfsc_timm.inference.sources import FolderImages

ORIENTATION = 0x0112  # the EXIF tag

# 16-bit values and their 8-bit value, value / 257 rounded: 128 / 257 = 0.498 -> 0, 129 / 257 = 0.502 -> 1,
# 32768 / 257 = 127.502 -> 128
UINT16 = [0, 128, 129, 257, 32768, 65535]
UINT16_AS_8BIT = [0, 0, 1, 1, 128, 255]


def _pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == 'RGB'
    return np.asarray(img)


def _gray(values) -> np.ndarray:
    """The (1, N, 3) RGB pixels of a row of gray values."""
    return np.repeat(np.array([values], dtype=np.uint8)[..., None], 3, axis=2)


def _palette(mode: str = 'P') -> Image.Image:
    img = Image.new(mode, (3, 1))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])  # index 0 red, 1 green, 2 blue
    return img


# 8-bit modes

def test_rgb_is_unchanged():
    pixels = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    assert to_rgb(img) is img and np.array_equal(_pixels(to_rgb(img)), pixels)


def test_grayscale_is_replicated():
    img = Image.fromarray(np.array([[0, 1, 128, 255]], dtype=np.uint8))
    assert img.mode == 'L'
    assert np.array_equal(_pixels(to_rgb(img)), _gray([0, 1, 128, 255]))


def test_one_bit_is_black_and_white():
    img = Image.new('1', (3, 1))
    img.putdata([0, 255, 0])
    assert np.array_equal(_pixels(to_rgb(img)), _gray([0, 255, 0]))


def test_grayscale_with_alpha_is_composited_onto_white():
    img = Image.fromarray(np.array([[[0, 255], [200, 0], [100, 128], [50, 64]]], dtype=np.uint8))
    assert img.mode == 'LA'
    # (100 * 128 + 255 * 127) / 255 = 177.2 -> 177; (50 * 64 + 255 * 191) / 255 = 203.5 -> 204
    assert np.array_equal(_pixels(to_rgb(img)), _gray([0, 255, 177, 204]))


def test_rgba_is_composited_onto_white():
    img = Image.fromarray(np.array([[[255, 0, 0, 128], [10, 20, 30, 0], [10, 20, 30, 255], [100, 200, 50, 191]]],
                                   dtype=np.uint8))
    assert img.mode == 'RGBA'
    expected = np.array([[
        [255, 127, 127],  # (0 * 128 + 255 * 127) / 255 = 127
        [255, 255, 255],  # fully transparent: the white background
        [10, 20, 30],  # opaque: unchanged
        [139, 214, 101],  # (100 * 191 + 255 * 64) / 255 = 138.9, 213.8, 101.5 (25870 / 255 = 101.45)
    ]], dtype=np.uint8)
    assert np.array_equal(_pixels(to_rgb(img)), expected)


def test_premultiplied_alpha_is_composited_onto_white():
    # premultiplied colour c' = c * a / 255 over white: c' + 255 - a
    assert np.array_equal(_pixels(to_rgb(Image.frombytes('La', (1, 1), bytes([100, 128])))), _gray([227]))
    rgba = Image.frombytes('RGBa', (1, 1), bytes([100, 50, 0, 128]))
    assert np.array_equal(_pixels(to_rgb(rgba)), np.array([[[227, 177, 127]]], dtype=np.uint8))


def test_palette_gives_its_colours():
    img = _palette()
    img.putdata([2, 0, 1])
    assert np.array_equal(_pixels(to_rgb(img)), np.array([[[0, 0, 255], [255, 0, 0], [0, 255, 0]]], dtype=np.uint8))


def test_palette_with_transparency_is_composited_onto_white():
    img = _palette()
    img.putdata([0, 1, 2])
    img.info['transparency'] = 1  # index 1 (green) is transparent, as in a GIF
    assert np.array_equal(_pixels(to_rgb(img)),
                          np.array([[[255, 0, 0], [255, 255, 255], [0, 0, 255]]], dtype=np.uint8))
    img.info['transparency'] = bytes([255, 0, 128])  # alpha per index, as in a PNG's tRNS chunk
    # blue at alpha 128: (0 + 255 * 127) / 255 = 127 for red and green, 255 for blue
    assert np.array_equal(_pixels(to_rgb(img)),
                          np.array([[[255, 0, 0], [255, 255, 255], [127, 127, 255]]], dtype=np.uint8))


def test_palette_with_alpha_band_is_composited_onto_white():
    img = Image.new('PA', (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255])
    img.putdata([(0, 255), (1, 128)])
    assert np.array_equal(_pixels(to_rgb(img)), np.array([[[255, 0, 0], [127, 127, 255]]], dtype=np.uint8))


def test_cmyk():
    img = Image.new('CMYK', (4, 1))
    img.putdata([(0, 0, 0, 0), (255, 0, 0, 0), (0, 255, 255, 0), (0, 0, 0, 255)])
    # paper, cyan ink, magenta + yellow (red), black ink
    expected = np.array([[[255, 255, 255], [0, 255, 255], [255, 0, 0], [0, 0, 0]]], dtype=np.uint8)
    assert np.array_equal(_pixels(to_rgb(img)), expected)


@pytest.mark.parametrize('mode, value, rgb', [
    ('HSV', (0, 255, 255), (255, 0, 0)),  # hue 0 at full saturation and value: red
    ('YCbCr', (255, 128, 128), (255, 255, 255)),  # full luma, no chroma: white
    ('LAB', (255, 128, 128), None),  # PIL's own conversion, checked against PIL below
])
def test_other_colour_spaces_use_pil(mode, value, rgb):
    img = Image.new(mode, (1, 1), value)
    got = _pixels(to_rgb(img))
    assert np.array_equal(got, np.asarray(img.convert('RGB')))
    if rgb is not None:
        assert tuple(got[0, 0]) == rgb


# high bit depth

@pytest.mark.parametrize('mode, dtype', [('I;16', '<u2'), ('I;16L', '<u2'), ('I;16B', '>u2'), ('I;16N', '=u2')])
def test_16_bit_is_scaled_by_257(mode, dtype):
    img = Image.frombytes(mode, (len(UINT16), 1), np.array(UINT16, dtype=dtype).tobytes())
    assert np.array_equal(np.asarray(img).astype(int)[0], UINT16)  # the image holds what it should
    assert np.array_equal(_pixels(to_rgb(img)), _gray(UINT16_AS_8BIT))


def test_32_bit_integer_holding_16_bit_values_is_scaled_by_257():
    img = Image.fromarray(np.array([UINT16], dtype=np.int32))
    assert img.mode == 'I'
    assert np.array_equal(_pixels(to_rgb(img)), _gray(UINT16_AS_8BIT))


def test_32_bit_integer_above_16_bit_is_scaled_by_the_32_bit_range():
    img = Image.fromarray(np.array([[0, 70000, 2 ** 24, 2 ** 30, 2 ** 31 - 1]], dtype=np.int32))
    # v * 255 / (2**32 - 1): 0.004 -> 0, 0.996 -> 1, 63.75 -> 64, 127.49999997 -> 127
    assert np.array_equal(_pixels(to_rgb(img)), _gray([0, 0, 1, 64, 127]))


def test_negative_integers_are_refused():
    img = Image.fromarray(np.array([[-5, 7]], dtype=np.int32))
    with pytest.raises(ValueError, match=r"image depth\.png has PIL mode 'I' with negative values \(range \[-5, 7\]\)"):
        to_rgb(img, 'depth.png')


def test_float_in_0_1_is_scaled_by_255():
    img = Image.fromarray(np.array([[0., .5, 1., .2, .002]], dtype=np.float32))
    assert img.mode == 'F'
    # 0.5 * 255 = 127.5 -> 128 (halves up); 0.2 * 255 = 51.000001 -> 51; 0.002 * 255 = 0.51 -> 1
    assert np.array_equal(_pixels(to_rgb(img)), _gray([0, 128, 255, 51, 1]))


def test_float_in_0_255_is_kept():
    img = Image.fromarray(np.array([[0., 1.5, 2.49, 254.5, 255.]], dtype=np.float32))
    assert np.array_equal(_pixels(to_rgb(img)), _gray([0, 2, 2, 255, 255]))


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_float_nan_or_infinity_is_refused(bad):
    img = Image.fromarray(np.array([[0., bad, .5]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"image x\.tif has PIL mode 'F' with NaN or infinite values.*convert it"):
        to_rgb(img, 'x.tif')


@pytest.mark.parametrize('values, shown', [([-1., .5], '[-1, 0.5]'), ([0., 300.5], '[0, 300.5]')])
def test_float_outside_0_255_is_refused_naming_the_range(values, shown):
    img = Image.fromarray(np.array([values], dtype=np.float32))
    with pytest.raises(ValueError, match=rf"an image has PIL mode 'F' with values in \{shown[:-1]}\]"):
        to_rgb(img)


# EXIF orientation

@pytest.mark.parametrize('kind', ['RGB', 'I;16'])
def test_exif_orientation_is_applied_before_conversion(kind, tmp_path):
    gray = np.arange(6).reshape(2, 3)  # 3 wide, 2 tall
    if kind == 'RGB':
        stored = np.stack([gray, gray + 10, gray + 20], axis=2).astype(np.uint8)
        img, expected = Image.fromarray(stored), stored
    else:
        img = Image.fromarray((gray * 257).astype(np.uint16))
        expected = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)  # v * 257 / 257 = v
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # the camera was turned: show the stored pixels rotated 90 degrees clockwise
    img.save(tmp_path / 'turned.png', exif=exif)
    with Image.open(tmp_path / 'turned.png') as opened:
        assert opened.mode == kind and opened.size == (3, 2) and opened.getexif()[ORIENTATION] == 6
        got = to_rgb(opened)
    assert got.size == (2, 3)
    assert np.array_equal(_pixels(got), np.rot90(expected, k=-1))  # k=-1: clockwise


# the real files of the user report

def test_16_bit_png_file(tmp_path):
    Image.fromarray(np.array([UINT16], dtype=np.uint16)).save(tmp_path / 'deep.png')
    with Image.open(tmp_path / 'deep.png') as img:
        assert img.mode in ('I;16', 'I')  # Pillow >= 10 opens 16-bit grayscale PNGs as 'I;16', older ones as 'I'
        assert np.asarray(img.convert('RGB'))[0, :, 0].tolist() == [0, 128, 129, 255, 255, 255]  # PIL: clipped
        assert np.array_equal(_pixels(to_rgb(img, 'deep.png')), _gray(UINT16_AS_8BIT))


def test_float_tiff_file(tmp_path):
    Image.fromarray(np.array([[0., .5, 1., .2, .002]], dtype=np.float32)).save(tmp_path / 'float.tif')
    with Image.open(tmp_path / 'float.tif') as img:
        assert img.mode == 'F'
        assert np.asarray(img.convert('RGB')).max() <= 1  # PIL: (nearly) black
        assert np.array_equal(_pixels(to_rgb(img, 'float.tif')), _gray([0, 128, 255, 51, 1]))


# training, eval and embed all convert with to_rgb

def _high_bit_depth_folder(root):
    """A 16-bit PNG and a float TIFF whose pixels only to_rgb gets right (PIL's convert clips or blackens them)."""
    rng = np.random.default_rng(0)
    root.mkdir()
    Image.fromarray(rng.integers(0, 65536, (40, 30), dtype=np.uint16)).save(root / 'deep.png')
    Image.fromarray(rng.random((36, 28), dtype=np.float32)).save(root / 'float.tif')
    return root


@pytest.mark.parametrize('train', [False, True])
def test_training_and_eval_transforms_use_to_rgb(train, tmp_path):
    cfg = dict(input_size=(3, 32, 16), interpolation='bilinear', mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
    transform = build_transforms(cfg, train=train)
    for path in sorted(_high_bit_depth_folder(tmp_path / 'images').iterdir()):
        with Image.open(path) as img:
            assert np.array_equal(_pixels(transform.transforms[0](img)), _pixels(to_rgb(img)))
            tensors = []
            for image in (img, to_rgb(img)):
                random.seed(0)  # timm's random crop and erasing draw from `random`, the flip from torch
                torch.manual_seed(0)
                tensors.append(transform(image))
            assert torch.equal(tensors[0], tensors[1])


def test_embed_uses_to_rgb(tmp_path, capsys):
    folder = _high_bit_depth_folder(tmp_path / 'images')
    source = FolderImages(folder)
    items = _TransformedImages(source, range(len(source)), pil_to_tensor, 'RGB')
    for i, name in enumerate(source.ids):
        with Image.open(folder / name) as img:
            assert torch.equal(items[i], pil_to_tensor(to_rgb(img)))

    torch.manual_seed(0)
    net = timm.create_model('sfsc_resnet18', num_classes=4, widths=(0.5, 1.0), embed_dim=8,
                            pretrained_cfg_overlay=dict(input_size=(3, 32, 32))).eval()
    got = read_embeddings(embed_images(net, folder, tmp_path / 'e.parquet', progress=False).output)
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=net))
    with torch.no_grad():
        batch = torch.stack([transform(to_rgb(Image.open(folder / name))) for name in got['ids']])
        expected = F.normalize(net.forward_head(net.forward_features(batch), pre_logits=True), dim=1)
    assert got['ids'] == ['deep.png', 'float.tif']
    torch.testing.assert_close(got['embeddings'], expected, rtol=1e-4, atol=1e-5)

    # an image with no 8-bit form: the command refuses it in one line, naming the file (exit 2, nothing written)
    Image.fromarray(np.array([[0., 1000.]], dtype=np.float32)).save(folder / 'hdr.tif')
    sfsc_timm.save(net, tmp_path / 'ckpt')
    assert embed_main([str(tmp_path / 'ckpt'), str(folder), '--output', str(tmp_path / 'x.parquet'),
                       '--no-progress']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and "image hdr.tif has PIL mode 'F' with values in [0, 1000]" in err, err
    assert not (tmp_path / 'x.parquet').exists()


def test_a_decompression_bomb_is_named_by_embed_and_eval(tmp_path, monkeypatch, capsys):
    # an image over PIL's pixel limit (here lowered, as a real bomb would take gigabytes): one line naming the file
    import timm as _timm

    import sfsc_timm
    from sfsc_timm.eval import cli as eval_cli
    from sfsc_timm.inference import cli as embed_cli
    for split, count in (('query', 1), ('gallery', 2)):
        for label in ('a', 'b'):
            (tmp_path / 'd' / split / label).mkdir(parents=True)
            for k in range(count):
                Image.new('RGB', (16, 16), (k * 50, 0, 0)).save(tmp_path / 'd' / split / label / f'{k}.png')
    big = tmp_path / 'd' / 'gallery' / 'a' / 'big.png'
    Image.new('RGB', (64, 64)).save(big)
    net = _timm.create_model('sfsc_resnet18', num_classes=2, widths=(0.5, 1.0), embed_dim=8,
                             pretrained_cfg_overlay=dict(input_size=(3, 16, 16))).eval()
    ckpt = sfsc_timm.save(net, tmp_path / 'ckpt')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)  # 64 x 64 is more than twice the limit: an error
    assert embed_cli.main([str(ckpt), str(tmp_path / 'd' / 'gallery'), '--output', str(tmp_path / 'e.parquet'),
                           '--no-progress']) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(big) in err, err
    assert eval_cli.main([str(ckpt), '--data', f'imagefolder:{tmp_path / "d"}', '--output', str(tmp_path / 'o')]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if 'error' in line]  # (datasets' bars aside)
    assert len(errors) == 1 and str(big) in errors[0], errors
