""" One conversion of a PIL image of any mode to 8-bit RGB, shared by training, evaluation and ``sfsc-timm embed``.

``Image.convert('RGB')`` alone gives wrong pixels for high-bit-depth images: a 16-bit PNG (mode 'I;16') is clipped
to near-white and a float TIFF (mode 'F') in [0, 1] becomes black. :func:`to_rgb` scales such images by their
type's range, composites transparent images onto white, and refuses what it cannot map to 8 bit unambiguously.
"""
from typing import Tuple

import numpy as np
from PIL import ExifTags, Image, ImageOps

__all__ = ['to_rgb']

_ALPHA_MODES = ('LA', 'PA', 'RGBA')
_PREMULTIPLIED_MODES = ('La', 'RGBa')  # colour already multiplied by alpha; PIL cannot convert 'La' at all
_PIL_MODES = ('1', 'L', 'P', 'RGBX', 'CMYK', 'YCbCr', 'LAB', 'HSV')  # PIL's own conversion to RGB is right for these
_UINT16_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N')
_WHAT_TO_DO = 'convert it to 8-bit RGB (values 0..255) before sfsc-timm reads it'


def to_rgb(img: Image.Image, where: str = '') -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB, with its EXIF orientation applied.

    - 'RGB': unchanged. 'L': replicated to 3 channels. '1': black / white. 'P': its palette's colours.
      'CMYK', 'YCbCr', 'LAB', 'HSV', 'RGBX': PIL's conversion.
    - 'LA', 'RGBA', 'PA', 'La', 'RGBa' and palette images with transparency: composited onto white, so a
      transparent background becomes white, as most image viewers show it. The colour key ('transparency') of an
      'L' or 'RGB' image is ignored: those keep their pixels.
    - 16-bit 'I;16', 'I;16B', 'I;16L', 'I;16N': divided by 257 (65535 -> 255), replicated to 3 channels.
    - 32-bit integer 'I': divided by 257 when its maximum is <= 65535 (PNGs of mode 'I' hold 16-bit values), else
      scaled by 255 / (2**32 - 1). Negative values are refused, not clipped: they are signed data with no known
      mapping to 8 bit, or unsigned 32-bit values >= 2**31 that PIL reads as negative.
    - 32-bit float 'F': multiplied by 255 when its values lie in [0, 1], kept when in [0, 255] (an image in
      [0, 255] whose values are all <= 1 counts as [0, 1]); NaN, infinity or values outside [0, 255] are refused.

    Scaled values are rounded to the nearest integer (halves up) and clipped to [0, 255].

    Args:
        img: The image.
        where: What the image is (e.g. its path), named in the error message.

    Returns:
        An image of mode 'RGB' (``img`` itself when it is already RGB without an EXIF rotation).

    Raises:
        ValueError: For a mode or values that have no unambiguous 8-bit RGB form; the message names the mode and
            what to do.
    """
    # only transpose when needed: ImageOps.exif_transpose copies every image, even one without a rotation
    if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == 'RGB':
        return img
    if mode in _PREMULTIPLIED_MODES:
        values = np.asarray(img).astype(np.float64)
        # premultiplied colour over white: c * a / 255 + 255 * (1 - a / 255) = stored colour + 255 - a
        return _rgb(values[..., :-1] + 255. - values[..., -1:])
    if mode in _ALPHA_MODES or (mode == 'P' and _palette_has_alpha(img)):
        rgba = np.asarray(img.convert('RGBA')).astype(np.float64)
        colour, alpha = rgba[..., :3], rgba[..., 3:]
        return _rgb((colour * alpha + 255. * (255. - alpha)) / 255.)
    if mode in _PIL_MODES:
        return img.convert('RGB')
    if mode in _UINT16_MODES:
        return _rgb(np.asarray(img).astype(np.float64) * (255. / 65535.))
    if mode == 'I':
        values = np.asarray(img).astype(np.float64)
        low, high = _range(values)
        if low < 0:
            raise ValueError(f'{_subject(where)} has PIL mode {mode!r} with negative values (range [{low:.0f}, '
                             f'{high:.0f}]), which have no 8-bit RGB form; {_WHAT_TO_DO}.')
        return _rgb(values * (255. / (65535. if high <= 65535 else 2. ** 32 - 1)))
    if mode == 'F':
        values = np.asarray(img).astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f'{_subject(where)} has PIL mode {mode!r} with NaN or infinite values, which have no '
                             f'8-bit RGB form; {_WHAT_TO_DO}.')
        low, high = _range(values)
        if low < 0 or high > 255:
            raise ValueError(f'{_subject(where)} has PIL mode {mode!r} with values in [{low:g}, {high:g}]; float '
                             f'images must lie in [0, 1] or [0, 255] to be read; {_WHAT_TO_DO}.')
        return _rgb(values * 255. if high <= 1 else values)
    raise ValueError(f'{_subject(where)} has PIL mode {mode!r}, which sfsc-timm cannot convert to RGB; {_WHAT_TO_DO}.')


def _subject(where: str) -> str:
    return f'image {where}' if where else 'an image'


def _palette_has_alpha(img: Image.Image) -> bool:
    # a transparent palette index (GIF, PNG tRNS) or a palette with an alpha channel (e.g. from quantizing RGBA)
    return 'transparency' in img.info or (img.palette is not None and img.palette.mode.endswith('A'))


def _range(values: np.ndarray) -> Tuple[float, float]:
    return (float(values.min()), float(values.max())) if values.size else (0., 0.)


def _rgb(values: np.ndarray) -> Image.Image:
    """An RGB image of (H, W), (H, W, 1) or (H, W, 3) values on the 0..255 scale, rounded to nearest (halves up)
    and clipped; one channel is replicated to three."""
    pixels = np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(pixels, (*pixels.shape[:2], 3))))
