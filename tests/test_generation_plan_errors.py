"""Planning's failures keep what they are: a persona file whose later rows do not parse is one
line naming the file (its cause kept); anything else (a bug, Ray's own failure) propagates as
itself. No Ray runs here: the plan's dataset is a stand-in that fails as Ray Data's does."""

from __future__ import annotations

import pyarrow as pa
import pytest
from ray.exceptions import RayTaskError

from ec2er.errors import DataError
from ec2er.generation.job import write_planned

ARROW = "JSON parse error: Missing a name for object member. in row 3"


class FailingPlan:
    def __init__(self, error: BaseException):
        self.error = error

    def write_parquet(self, uri: str) -> None:
        raise self.error


def _from_a_read_task(cause: BaseException) -> BaseException:
    """The error as a Ray Data read task's failure reaches the driver."""
    trace = f"Traceback (most recent call last):\n  ...\npyarrow.lib.{type(cause).__name__}: {cause}"
    return RayTaskError("ReadJSON->MapBatches(rows)", trace, cause).as_instanceof_cause()


@pytest.mark.parametrize("error", [_from_a_read_task(pa.ArrowInvalid(ARROW)), pa.ArrowInvalid(ARROW),
                                   RuntimeError(f"Failed in task\npyarrow.lib.ArrowInvalid: {ARROW}")])
def test_a_persona_file_that_does_not_parse_is_one_line_naming_it(error):
    with pytest.raises(DataError) as caught:
        write_planned(FailingPlan(error), "/tmp/unused", "/data/personas.jsonl")
    assert str(caught.value) == f"/data/personas.jsonl: {ARROW}"
    assert caught.value.__cause__ is error  # the cause kept, for --debug


@pytest.mark.parametrize("error", [KeyError("spec"), _from_a_read_task(ZeroDivisionError("division by zero")),
                                   ConnectionError("GCS unreachable")])
def test_any_other_planning_failure_propagates_as_itself(error):
    with pytest.raises(type(error)) as caught:
        write_planned(FailingPlan(error), "/tmp/unused", "/data/personas.jsonl")
    assert caught.value is error


def test_with_the_sampler_even_an_arrow_error_is_not_a_persona_file_error():
    error = pa.ArrowInvalid(ARROW)
    with pytest.raises(pa.ArrowInvalid) as caught:
        write_planned(FailingPlan(error), "/tmp/unused", None)
    assert caught.value is error
