"""mteb tasks built from local files (one module per task type), so every score comes from
mteb's own evaluators, offline.

Each factory returns an instance of a subclass of one of mteb's task classes (written against
mteb 2.26) whose ``load_data`` reads files instead of the Hugging Face Hub:

| factory                        | mteb class                 | type               | main score        |
|--------------------------------|----------------------------|--------------------|-------------------|
| ``make_sts_task``              | AbsTaskSTS                 | STS                | cosine_spearman   |
| ``make_lee_task``              | AbsTaskSTS                 | STS                | cosine_spearman   |
| ``make_retrieval_task``        | AbsTaskRetrieval           | Retrieval          | ndcg_at_10        |
| ``make_reranking_task``        | AbsTaskRetrieval (+top_ranked) | Reranking      | map_at_1000       |
| ``make_classification_task``   | AbsTaskClassification      | Classification     | accuracy          |
| ``make_clustering_task``       | AbsTaskClustering          | Clustering         | v_measure         |
| ``make_pair_classification_task`` | AbsTaskPairClassification | PairClassification | max_ap          |

The main scores are the ones mteb's own tasks of each type use (STSBenchmark, SciFact,
SciDocsRR, Banking77Classification, TwentyNewsgroupsClustering.v2, SprintDuplicateQuestions).
In mteb 2 reranking is retrieval over each query's own candidate list (``top_ranked``); the old
``AbsTaskReranking`` is deprecated. Layouts (as in shared/data/README.md) are in ``LAYOUTS``.

Subsampling is seeded (``random.Random(seed)``) and keeps file order, so a given file, limit and
seed always give the same subset. ``task.limits`` holds the requested limits and, after loading,
``task.sizes`` what was kept. ``metadata.dataset`` names the file(s) and a content hash of them.

mteb detail: a task's metadata must live on its class (``AbsTask.unload_data`` drops an
instance-level ``metadata``), so each factory call makes a small subclass named after the task.
"""

from grace.evaluation.tasks.classification import LocalClassificationTask, make_classification_task
from grace.evaluation.tasks.clustering import LocalClusteringTask, make_clustering_task
from grace.evaluation.tasks.common import LAYOUTS, read_jsonl, sample_indices, subsample_retrieval
from grace.evaluation.tasks.pair_classification import (
    LocalPairClassificationTask,
    make_pair_classification_task,
)
from grace.evaluation.tasks.retrieval import (
    LocalRerankingTask,
    LocalRetrievalTask,
    make_reranking_task,
    make_retrieval_task,
)
from grace.evaluation.tasks.sts import LeeSTSTask, LocalSTSTask, make_lee_task, make_sts_task

__all__ = [
    "LAYOUTS", "LeeSTSTask", "LocalClassificationTask", "LocalClusteringTask",
    "LocalPairClassificationTask", "LocalRerankingTask", "LocalRetrievalTask", "LocalSTSTask",
    "make_classification_task", "make_clustering_task", "make_lee_task",
    "make_pair_classification_task", "make_reranking_task", "make_retrieval_task",
    "make_sts_task", "read_jsonl", "sample_indices", "subsample_retrieval",
]
