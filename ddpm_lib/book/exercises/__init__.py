"""Automatic checks for the book's exercises, keyed by the exercise's label (see :mod:`.engine`).

    from ddpm_lib.book.exercises import check, check_function, choose
    check("ex-forward-abar", my_answer)
"""

from .engine import (CHOICE_SEED, EXERCISES, NO_ANSWER, WIDTH, ChoiceExercise, ExerciseFailed,  # noqa: F401
                     FunctionExercise, UnknownExercise, ValueExercise, Verdict, check, check_function, choose,
                     exercise, expected_value, function_results, function_trials, judge_choice, judge_function,
                     judge_value)
