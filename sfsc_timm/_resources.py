"""Files that ship with sfsc-timm but live outside the package in the source tree: the built-in recipes
(``recipes/``) and the model card template (``model_cards/``).

A wheel carries them inside the package (``sfsc_timm/recipes``, ``sfsc_timm/model_cards``: pyproject.toml maps the
source folders there); a source checkout or an editable install reads them from the repository root.
"""
from pathlib import Path
from typing import List, Union

_PACKAGE = Path(__file__).resolve().parent
FOLDERS = ('recipes', 'model_cards')


def shipped_folder(folder: str) -> Path:
    """Where ``recipes`` or ``model_cards`` is: inside the installed package, else at the source tree's root."""
    if folder not in FOLDERS:
        raise ValueError(f'{folder!r} is not one of the shipped folders {FOLDERS}.')
    installed = _PACKAGE / folder
    return installed if installed.is_dir() else _PACKAGE.parent / folder


def shipped_file(folder: str, name: str) -> Path:
    """The path of ``name`` in the shipped ``folder`` (it may not exist; callers say what is missing)."""
    return shipped_folder(folder) / name


def builtin_recipes() -> List[str]:
    """Names of the built-in recipes (``sfsc-timm train -c NAME``)."""
    return sorted(p.stem for p in shipped_folder('recipes').glob('*.yaml'))


def resolve_recipe(recipe: Union[str, Path]) -> Path:
    """The YAML file a recipe argument names: a path that exists, else a built-in recipe by name
    (``sfsc_resnet18_fashion_mnist``, or ``recipes/sfsc_resnet18_fashion_mnist.yaml`` as the README writes it).

    Raises:
        FileNotFoundError: neither; the message lists the built-in recipes.
    """
    path = Path(recipe)
    if path.is_file():
        return path
    builtin = shipped_file('recipes', f'{path.stem}.yaml')
    if str(path.parent) in ('.', 'recipes') and path.suffix in ('', '.yaml') and builtin.is_file():
        return builtin
    raise FileNotFoundError(f'recipe {recipe} not found; built-in recipes (pass the name): '
                            f'{", ".join(builtin_recipes())}.')
