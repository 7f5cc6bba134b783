"""The data layer: tasks, their generators and graders, and `ProblemSet`.

Numpy only. The tfds builder (`ttc_jax.data.tfds_arith`) and the seqio tasks
(`ttc_jax.data.seqio_tasks`) import TensorFlow, so import them explicitly where needed.
"""
from ttc_jax.data.arith import (ArithTask, ArithTaskConfig, Problem, SPLITS, generate,
                                is_correct, max_prompt_len, max_text_len, parse_answer,
                                parse_question, pretrain_texts, problem_set, problems_to_set,
                                step_correctness)
from ttc_jax.data.problems import Grader, ProblemSet
from ttc_jax.data.task import Task
from ttc_jax.data.tokenizer import CharTokenizer, Tokenizer
