""" ``python -m sfsc_timm.train -c RECIPE`` and ``torchrun --nproc_per_node N -m sfsc_timm.train -c RECIPE``. """
import sys

from .cli import main

if __name__ == '__main__':
    sys.exit(main())
