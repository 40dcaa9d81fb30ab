"""sdg-twin: digital-twin co-simulation of Solar Digital Grid demonstration zones."""

from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

HERE = Path(__file__).parent

# Every ext/*.pyx is a kernel; directives are set once here, not in each file.
kernels = [
    Extension(f"ext.{pyx.stem}", [str(pyx.relative_to(HERE))], include_dirs=[np.get_include()],
              extra_compile_args=["-O3"])
    for pyx in sorted((HERE / "ext").glob("*.pyx"))
]

setup(
    name="sdg-twin",
    version="0.1.0",
    description="Digital-twin co-simulation of Solar Digital Grid demonstration zones (PV, EVs, factories, grid)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["twin*", "components*", "ext*"]),
    package_data={"twin": ["py.typed"]},
    ext_modules=cythonize(
        kernels,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                             "initializedcheck": False},
    ),
    install_requires=[
        "mosaik>=3.6,<4",
        "mosaik-api-v3>=3.0.16",
        # mosaik's event loop (twin/world.py); libuv has no Windows build of it
        "uvloop>=0.19; sys_platform != 'win32'",
        "simpy>=4",
        "pandapower>=3.1",
        "simbench>=1.6",
        "pvlib>=0.11",
        "pydantic>=2.6",
        "pyyaml>=6",
        "pyarrow>=14",
        "numpy>=1.26",
        "pandas>=2.1",
        "scipy>=1.11",
        "tqdm>=4.66",
        "cryptography>=42",
        "pymodbus>=3.16.1,<3.17",
        "ocpp>=2.1,<3",
        "websockets>=15,<18",
        "pysunspec2>=1.3,<2",
        "dask[distributed]>=2024.8",
        "plotly>=6.8,<7",
        "matplotlib>=3.8",
    ],
    extras_require={"test": ["pytest>=8", "hypothesis>=6.100"]},
    entry_points={"console_scripts": ["twin=twin.cli:main"]},
)
