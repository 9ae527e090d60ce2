"""Builds detkit and its compiled operators, the extension ``detkit._C``.

The C++ CPU kernels are always built. The CUDA kernels are added when torch
was built with CUDA and a CUDA toolkit (nvcc) is found, or when FORCE_CUDA=1.
Set TORCH_CUDA_ARCH_LIST (e.g. "8.0;9.0") to choose the GPU architectures.
"""

import os
from pathlib import Path

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

CSRC = Path("detkit/layers/csrc")


def _cuda_wanted() -> bool:
    if os.environ.get("FORCE_CUDA") == "1":
        return True
    nvcc = Path(CUDA_HOME or "", "bin", "nvcc")
    return torch.version.cuda is not None and nvcc.is_file()


def _extension():
    sources = sorted(str(p) for p in [*CSRC.glob("*.cpp"), *CSRC.glob("cpu/*.cpp")])
    cxx_flags = ["-O3", "-g0", "-fopenmp", "-ffp-contract=off", "-Wno-psabi"]
    if not _cuda_wanted():
        return CppExtension(
            "detkit._C",
            sources,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    sources += sorted(str(p) for p in [*CSRC.glob("cuda/*.cpp"), *CSRC.glob("cuda/*.cu")])
    return CUDAExtension(
        "detkit._C",
        sources,
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
        extra_link_args=["-fopenmp"],
    )


setup(
    name="detkit",
    version="0.1.0",
    description="A modular Fast R-CNN object-detection framework built on PyTorch",
    packages=find_packages(exclude=("tests", "tests.*", "tools", "configs", "projects")),
    python_requires=">=3.10",
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
)
