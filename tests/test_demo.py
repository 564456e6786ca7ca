"""`crew-mcp demo` (the README's main job) runs the whole flow through a real MCP connection."""

from __future__ import annotations

import pytest

from crew_mcp.demo import APPROVE_FEEDBACK, REJECT_FEEDBACK, run_demo


@pytest.mark.slow
async def test_demo_walks_inputs_kickoff_review_rejection_rerun_approval_and_result(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run_demo(time_scale=0.05) == 0
    out = capsys.readouterr().out
    steps = [
        "list_inputs(crew='research')",
        "kickoff_crew → kickoff_id",
        "paused for review of task",
        f"resume_with_feedback(approve=false, feedback={REJECT_FEEDBACK!r})",
        "revised output",
        f"resume_with_feedback(approve=true, feedback={APPROVE_FEEDBACK!r})",
        "completed: final output",
        "list_executions(conversation_id='demo')",
    ]
    positions = [out.index(step) for step in steps]
    assert positions == sorted(positions)
    assert out.count(f"Revised per feedback: {REJECT_FEEDBACK}") >= 2  # in the revised review and the final output
    assert APPROVE_FEEDBACK in out.split("completed: final output", 1)[1]
