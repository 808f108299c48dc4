"""Ship the top-level targets/ and firmware_templates/ inside the package.

They live at the top of the repository (targets are data, templates are device
code), and a plain `pip install .` must still find them: build_py copies them
to edgeslim/_data/. An editable install reads them from the repository
(edgeslim.resources looks in both places).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_DIRS = ("targets", "firmware_templates")


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        here = Path(__file__).parent
        for name in DATA_DIRS:
            src = here / name
            dst = Path(self.build_lib) / "edgeslim" / "_data" / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithData})
