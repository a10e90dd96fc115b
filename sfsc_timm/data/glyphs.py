""" Glyph re-identification: a Market-1501-shaped open-set benchmark rendered from Debian's CJK fonts.

An identity is a CJK character; a "camera" is a typeface design (Noto Sans CJK, Noto Serif CJK, AR PL UKai, ...);
an image is the character rendered in one face of that design with a mild seeded augmentation. As in Market-1501,
the test identities are disjoint from the training ones, a query's positives in its own camera are ignored (the
re-ID camera rule), and every identity is seen through several cameras.

The fonts are Debian packages (`fonts-noto-cjk`, `fonts-arphic-ukai`, `fonts-arphic-uming`, `fonts-wqy-zenhei`,
`fonts-wqy-microhei`, `fonts-ipafont-gothic`, `fonts-ipafont-mincho`, `fonts-droid-fallback`; `make glyphs`
installs them). A character counts as covered by a face only when the face's cmap maps it *and* its rendering is
neither empty nor the face's .notdef box. With all eight packages, 1,422 of the first 3,000 CJK unified ideographs
are covered by each of 36 faces in 9 designs: 750 of them train, 672 test (about 25,000 images each).

The dataset is built once and cached with `datasets.DatasetDict.save_to_disk` under a key of the fonts and the
arguments; later loads memory-map the cache.
"""
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import datasets
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..atomic_io import give_default_permissions, remove_stale_temporaries, temp_path_for
from .retrieval_data import RetrievalData
from .splits import pick_queries

__all__ = [
    'GLYPH_DESIGNS', 'GLYPH_FONT_PACKAGES', 'DEFAULT_FONT_DIRS', 'DEFAULT_CODEPOINTS', 'GlyphFace', 'find_glyph_faces',
    'covered_codepoints', 'render_glyph', 'build_glyph_dataset', 'load_glyphs',
]

# camera name -> regular expression on the face's family name; faces whose family matches none are not used
GLYPH_DESIGNS: Tuple[Tuple[str, str], ...] = (
    ('noto-sans', r'^Noto Sans CJK'),
    ('noto-serif', r'^Noto Serif CJK'),
    ('arphic-ukai', r'^AR PL UKai'),
    ('arphic-uming', r'^AR PL UMing'),
    ('wqy-zenhei', r'^WenQuanYi Zen Hei'),
    ('wqy-microhei', r'^WenQuanYi Micro Hei'),
    ('ipa-gothic', r'^IPAP?Gothic$'),
    ('ipa-mincho', r'^IPAP?Mincho$'),
    ('droid', r'^Droid Sans Fallback'),
)
GLYPH_FONT_PACKAGES = (
    'fonts-noto-cjk', 'fonts-arphic-ukai', 'fonts-arphic-uming', 'fonts-wqy-zenhei', 'fonts-wqy-microhei',
    'fonts-ipafont-gothic', 'fonts-ipafont-mincho', 'fonts-droid-fallback')
DEFAULT_FONT_DIRS = ('/usr/share/fonts',)
DEFAULT_CODEPOINTS = range(0x4E00, 0x4E00 + 3000)  # the first 3,000 CJK unified ideographs
# "Mono" faces differ from their proportional siblings in Latin advance widths only: identical ideographs
_EXCLUDED_FAMILY = re.compile(r'\bMono\b')
_FONT_SUFFIXES = ('.ttf', '.ttc', '.otf', '.otc')
_NOTDEF_PROBE = '\uffff'  # a noncharacter: no face maps it, so it renders as the face's .notdef glyph
BUILDER_VERSION = 1  # bump when the rendering or the split changes: it is part of the cache key


@dataclass(frozen=True)
class GlyphFace:
    """One face of a font file, and the design (camera) it belongs to."""
    path: str
    index: int
    family: str
    design: str

    @property
    def name(self) -> str:
        return f'{self.family} ({Path(self.path).name}#{self.index})'


def _install_hint() -> str:
    return f'apt-get install -y {" ".join(GLYPH_FONT_PACKAGES)} (or `make glyphs`)'


def find_glyph_faces(
        font_dirs: Sequence[Union[str, Path]] = DEFAULT_FONT_DIRS,
        designs: Sequence[Tuple[str, str]] = GLYPH_DESIGNS,
) -> List[GlyphFace]:
    """Every face under `font_dirs` whose family name matches one of `designs` (Mono variants excluded).

    Font files are deduplicated by their real path (Debian links a few names to the same file); the order is
    deterministic: by design, then path, then face index.
    """
    from fontTools.ttLib import TTCollection, TTFont  # fontTools comes with matplotlib

    patterns = [(name, re.compile(pattern)) for name, pattern in designs]
    paths = sorted({os.path.realpath(p) for d in font_dirs for p in Path(d).rglob('*')
                    if p.suffix.lower() in _FONT_SUFFIXES and p.is_file()})
    faces = []
    for path in paths:
        try:
            fonts = TTCollection(path, lazy=True).fonts if path.lower().endswith(('.ttc', '.otc')) \
                else [TTFont(path, lazy=True)]
        except Exception:  # not a font fontTools can read: not one of ours
            continue
        for index, font in enumerate(fonts):
            family = font['name'].getBestFamilyName() or ''
            design = next((name for name, pattern in patterns if pattern.search(family)), None)
            if design is not None and not _EXCLUDED_FAMILY.search(family):
                faces.append(GlyphFace(path=path, index=index, family=family, design=design))
    order = {name: i for i, (name, _) in enumerate(designs)}
    return sorted(faces, key=lambda f: (order[f.design], f.path, f.index))


def _cmap_codepoints(face: GlyphFace, codepoints: Iterable[int]) -> set:
    from fontTools.ttLib import TTCollection, TTFont

    if face.path.lower().endswith(('.ttc', '.otc')):
        font = TTCollection(face.path, lazy=True).fonts[face.index]
    else:
        font = TTFont(face.path, lazy=True)
    cmap = font.getBestCmap() or {}
    return {c for c in codepoints if c in cmap}


def _glyph_mask(font: ImageFont.FreeTypeFont, char: str) -> Tuple[Tuple[int, int], bytes]:
    mask = font.getmask(char)
    return mask.size, bytes(mask)


def _really_has_glyph(font: ImageFont.FreeTypeFont, char: str, notdef: Tuple[Tuple[int, int], bytes]) -> bool:
    size, pixels = _glyph_mask(font, char)
    return size[0] > 0 and size[1] > 0 and any(pixels) and (size, pixels) != notdef


def covered_codepoints(faces: Sequence[GlyphFace], codepoints: Iterable[int] = DEFAULT_CODEPOINTS,
                       font_size: int = 48) -> List[int]:
    """The code points every face really holds: mapped by its cmap, rendering neither empty nor as .notdef."""
    codepoints = list(codepoints)
    common = set(codepoints)
    for face in faces:
        common &= _cmap_codepoints(face, codepoints)
    for face in faces:
        font = ImageFont.truetype(face.path, font_size, index=face.index)
        notdef = _glyph_mask(font, _NOTDEF_PROBE)
        common = {c for c in common if _really_has_glyph(font, chr(c), notdef)}
    return sorted(common)


def render_glyph(font: ImageFont.FreeTypeFont, char: str, image_size: int = 64,
                 rng: Optional[np.random.Generator] = None) -> Image.Image:
    """`char` in `font`, black on white, centred on a square grayscale canvas.

    With `rng`, a mild augmentation: scale 0.8-1.0 of the glyph box, rotation within +-4 degrees, a shift of up to
    1/20 of the canvas and a Gaussian blur of radius up to 0.6 px (per 64 px).
    """
    canvas = Image.new('L', (image_size, image_size), 255)
    left, top, right, bottom = font.getbbox(char)
    width, height = right - left, bottom - top
    glyph = Image.new('L', (max(width, 1), max(height, 1)), 255)
    ImageDraw.Draw(glyph).text((-left, -top), char, font=font, fill=0)
    target = 0.85 * image_size if rng is None else rng.uniform(0.8, 1.0) * 0.85 * image_size
    scale = target / max(width, height, 1)
    glyph = glyph.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    shift = (0., 0.) if rng is None else tuple(rng.uniform(-1, 1, size=2) * image_size / 20)
    x = round((image_size - glyph.width) / 2 + shift[0])
    y = round((image_size - glyph.height) / 2 + shift[1])
    canvas.paste(glyph, (x, y))
    if rng is not None:
        canvas = canvas.rotate(rng.uniform(-4, 4), resample=Image.BILINEAR, fillcolor=255)
        radius = rng.uniform(0, 0.6) * image_size / 64
        if radius > 0.05:
            canvas = canvas.filter(ImageFilter.GaussianBlur(radius))
    return canvas


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def _render_split(faces: Sequence[GlyphFace], fonts: Sequence[ImageFont.FreeTypeFont], codepoints: Sequence[int],
                  image_size: int, seed: int, augment: bool) -> Dict[str, list]:
    """Every code point in every face: images (PNG), labels (position in `codepoints`), cameras (design index)."""
    designs = sorted({f.design for f in faces}, key=[f.design for f in faces].index)
    images, labels, cameras = [], [], []
    for label, cp in enumerate(codepoints):
        for face_index, (face, font) in enumerate(zip(faces, fonts)):
            rng = np.random.default_rng([seed, cp, face_index]) if augment else None
            images.append({'bytes': _png(render_glyph(font, chr(cp), image_size, rng)), 'path': None})
            labels.append(label)
            cameras.append(designs.index(face.design))
    return dict(image=images, label=labels, camera=cameras)


def build_glyph_dataset(
        faces: Optional[Sequence[GlyphFace]] = None,
        *,
        codepoints: Iterable[int] = DEFAULT_CODEPOINTS,
        num_train: int = 750,
        num_test: int = 700,
        query_per_identity: int = 3,
        image_size: int = 64,
        augment: bool = True,
        seed: int = 0,
) -> Tuple[datasets.DatasetDict, Dict]:
    """Render the benchmark in memory: splits `train`, `query`, `gallery` and a description of it.

    Args:
        faces: Faces to render (default: `find_glyph_faces()`); at least two designs.
        codepoints: Candidate characters; those every face really covers are the identities.
        num_train: Training identities (the first of a seeded permutation of the covered characters).
        num_test: Test identities, disjoint from the training ones (fewer when fewer characters are covered).
        query_per_identity: Queries per test identity, each from a different design; the rest is the gallery.
        image_size: Side of the square grayscale images.
        augment: Mild seeded augmentation of every image (see `render_glyph`).
        seed: Seed of the identity split, the queries and the augmentation.

    Raises:
        FileNotFoundError: no usable face (the message names the Debian packages to install).
        ValueError: too few designs or covered characters for the requested split.
    """
    faces = list(find_glyph_faces() if faces is None else faces)
    if not faces:
        raise FileNotFoundError(f'no CJK font faces found under {", ".join(DEFAULT_FONT_DIRS)}; install them: '
                                f'{_install_hint()}')
    designs = sorted({f.design for f in faces}, key=[f.design for f in faces].index)
    if len(designs) < 2:
        raise ValueError(f'glyph re-identification needs faces of at least two designs (cameras); found only '
                         f'{designs}. Install more fonts: {_install_hint()}')
    if query_per_identity >= len(designs):
        raise ValueError(f'query_per_identity={query_per_identity} must be below the number of designs '
                         f'({len(designs)}), so that every query has positives in other cameras.')
    covered = covered_codepoints(faces, codepoints)
    if len(covered) < num_train + 2:
        raise ValueError(f'only {len(covered)} characters are covered by all {len(faces)} faces; num_train='
                         f'{num_train} leaves fewer than 2 test identities. Lower num_train or install more fonts.')
    order = np.random.default_rng(seed).permutation(len(covered))
    train_cps = sorted(covered[i] for i in order[:num_train])
    test_cps = sorted(covered[i] for i in order[num_train:num_train + num_test])
    fonts = [ImageFont.truetype(f.path, image_size, index=f.index) for f in faces]
    features = lambda cps: datasets.Features(  # noqa: E731
        image=datasets.Image(), label=datasets.ClassLabel(names=[chr(c) for c in cps]), camera=datasets.Value('int64'))
    train = datasets.Dataset.from_dict(_render_split(faces, fonts, train_cps, image_size, seed, augment),
                                       features=features(train_cps))
    test_columns = _render_split(faces, fonts, test_cps, image_size, seed + 1, augment)
    test = datasets.Dataset.from_dict(test_columns, features=features(test_cps))
    is_query = np.zeros(len(test), dtype=bool)
    is_query[pick_queries(np.asarray(test_columns['label']), query_per_identity,
                          cameras=np.asarray(test_columns['camera']), seed=seed)] = True
    splits = datasets.DatasetDict(train=train, query=test.select(np.flatnonzero(is_query)),
                                  gallery=test.select(np.flatnonzero(~is_query)))
    info = dict(
        builder_version=BUILDER_VERSION, designs=designs, faces=[dataclasses.asdict(f) for f in faces],
        num_faces=len(faces), covered=len(covered), train_identities=len(train_cps), test_identities=len(test_cps),
        query_per_identity=query_per_identity, image_size=image_size, augment=augment, seed=seed,
        sizes={name: len(split) for name, split in splits.items()})
    return splits, info


def _cache_key(faces: Sequence[GlyphFace], arguments: Dict) -> str:
    files = sorted({f.path for f in faces})
    described = dict(version=BUILDER_VERSION, arguments=arguments, faces=[dataclasses.asdict(f) for f in faces],
                     files=[(p, os.path.getsize(p), int(os.path.getmtime(p))) for p in files])
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """`$SFSC_GLYPHS_CACHE`, else `glyphs/` in the `datasets` cache (`$HF_DATASETS_CACHE`)."""
    return Path(os.environ.get('SFSC_GLYPHS_CACHE') or Path(datasets.config.HF_DATASETS_CACHE) / 'sfsc_glyphs')


def load_glyphs(
        cache_dir: Optional[Union[str, Path]] = None,
        *,
        faces: Optional[Sequence[GlyphFace]] = None,
        codepoints: Iterable[int] = DEFAULT_CODEPOINTS,
        num_train: int = 750,
        num_test: int = 700,
        query_per_identity: int = 3,
        image_size: int = 64,
        augment: bool = True,
        seed: int = 0,
) -> RetrievalData:
    """The glyph re-identification benchmark as RetrievalData, built on first use and cached on disk.

    Arguments as in :func:`build_glyph_dataset`; `cache_dir` defaults to :func:`default_cache_dir`. The cache key
    covers the builder version, the font files (path, size, modification time) and every argument, so installing
    another font or changing an argument builds a new cache entry; the old one is left in place.
    """
    faces = list(find_glyph_faces() if faces is None else faces)
    if not faces:
        raise FileNotFoundError(f'no CJK font faces found under {", ".join(DEFAULT_FONT_DIRS)}; install them: '
                                f'{_install_hint()}')
    codepoints = list(codepoints)
    arguments = dict(codepoints=codepoints, num_train=num_train, num_test=num_test,
                     query_per_identity=query_per_identity, image_size=image_size, augment=augment, seed=seed)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f'glyphs-{_cache_key(faces, arguments)}'
    if not (folder / 'info.json').is_file():
        splits, info = build_glyph_dataset(faces, **arguments)
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(root, folder.name)
        staging = temp_path_for(folder)
        staging.mkdir()
        try:
            splits.save_to_disk(str(staging / 'data'))
            (staging / 'info.json').write_text(json.dumps(info, indent=1))  # written last: marks a complete build
            give_default_permissions(staging)
            try:
                os.rename(staging, folder)
            except OSError:  # another process finished the same build first: keep its copy
                if not (folder / 'info.json').is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    splits = datasets.load_from_disk(str(folder / 'data'))
    return RetrievalData(train=splits['train'], query=splits['query'], gallery=splits['gallery'],
                         num_classes=splits['train'].features['label'].num_classes, name='glyphs')
