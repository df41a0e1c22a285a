# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The IR3DE Space: see the routing decision, hear the chosen expert, add and remove experts live.

    python space_app/app.py                            # the demo router (SmolLM2-135M + six LoRA experts)
    IR3DE_ROUTER=org/router python space_app/app.py    # a router from the Hub or a local directory

API endpoints (stable names, see space_app/README.md): /route, /generate, /add_expert, /remove_expert, /reset,
/experts, /evaluate. They receive the visitor's values unprocessed (`preprocess=False`) and `endpoints` checks them,
so every refusal reaches the visitor as a message; every other event is private (the page's own, not an API).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import endpoints  # the helper modules next to this file (the script's folder is on sys.path)
import gradio as gr
import pandas as pd
from benchmark_eval import PROMPT_TOKENS, evaluate_router
from PIL import Image
from router_snapshots import RouterHolder

from ir3de_hf import IR3DERouterModel

__all__ = ["EXAMPLES", "build_demo", "launch_options", "load_router", "main"]

ROUTER_ENV = "IR3DE_ROUTER"
# The public events take the visitor's values as sent, unprocessed: a component's own preprocessing would refuse some
# of them with an empty error (a Slider given "abc") or quietly change them (2.5 tokens, a number as the prompt), so
# `endpoints` checks every value itself and refuses with a message naming the problem.
PUBLIC: dict[str, Any] = {"preprocess": False}
PALETTE = ["#3b82f6", "#ef4444", "#10b981", "#f59e0b", "#8b5cf6", "#ec4899", "#14b8a6", "#84cc16", "#f97316"]
INTRO = """# IR3DE: a linear router for domain-expert LLMs
Each prompt token looks up its row of a ridge-regression score table; the tokens' scores decide which expert answers.
Type a prompt (or pick an example), see which expert each token votes for, and hear the chosen expert's answer."""
# One clear prompt per demo domain (the tests check that each routes to its domain).
EXAMPLES = {
    "code": "Write a Python function that reads a CSV file with csv.DictReader and returns the rows sorted by "
    "their 'date' column.",
    "legal": 'Can the licensee sublicense the software under this clause? "The Licensee shall not assign, '
    "transfer or sublicense any rights granted under this Agreement without the prior written consent of the "
    'Licensor."',
    "politics": "Summarise the parliamentary debate on the government's election reform bill and the amendments "
    "the opposition proposed.",
    "biomedical": "Patients with chronic kidney disease showed elevated serum creatinine and proteinuria; what "
    "does this suggest about glomerular filtration and treatment with ACE inhibitors?",
    "fiction": "Continue the story: the old lighthouse keeper climbed the stairs one last time, listening to the "
    "storm howl against the glass, and wondered whether her son's ship would ever come home.",
    "multilingual": "Explique-moi en quelques phrases pourquoi le ciel est bleu pendant la journée et rouge au "
    "coucher du soleil.",
}


def load_router() -> IR3DERouterModel:
    """The router named by ``$IR3DE_ROUTER`` (Hub id or local directory), else the demo router."""
    source = os.environ.get(ROUTER_ENV)
    if source:
        return IR3DERouterModel.from_pretrained(source)
    from ir3de_hf.demo import load_demo_router

    return load_demo_router()


def build_demo(holder: RouterHolder) -> gr.Blocks:
    """The Space's UI over ``holder``; every event calls a function of `endpoints` with the current snapshot."""
    with gr.Blocks(title="IR3DE router") as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Route & generate"):
            compare_with = route_tab(holder, EXAMPLES)
        with gr.Tab("Experts"):
            experts_tab(holder, compare_with)
        with gr.Tab("Evaluation"):
            evaluation_tab(holder)
    return demo


def route_tab(holder: RouterHolder, examples: dict[str, str]) -> gr.Dropdown:
    """Prompt, decision, scores, token votes, routed and forced answers; returns the 'Compare with' dropdown."""
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(
                label="Prompt",
                lines=5,
                max_length=endpoints.MAX_PROMPT_CHARS,
                placeholder="Ask anything: code, a contract clause, a diagnosis, a story, another language...",
                elem_id="prompt",
            )
            with gr.Row():
                route_button = gr.Button("Route & answer", variant="primary", elem_id="route-button")
                max_new_tokens = gr.Slider(
                    1, endpoints.MAX_NEW_TOKENS, value=48, step=1, label="max new tokens", scale=2
                )
            gr.Examples(
                [[text] for text in examples.values()],
                [prompt],
                example_labels=list(examples),
                api_visibility="private",
            )
        with gr.Column(scale=2):
            decision = gr.Markdown("The decision appears here.", elem_id="decision")
            scores = gr.BarPlot(
                x="expert", y="score", color="expert", label="Expert scores", height=240, elem_id="scores"
            )
    votes = gr.HighlightedText(
        label="Token votes: each token coloured by the expert its own score prefers",
        show_legend=True,
        combine_adjacent=True,
        elem_id="votes",
    )
    with gr.Row():
        answer = gr.Textbox(label="Routed answer", lines=6, interactive=False, elem_id="answer")
        with gr.Column():
            compare_with = gr.Dropdown(
                _answering(endpoints.experts(holder)),
                value=None,
                label="Compare with",
                info="force this expert on the same prompt, side by side",
                allow_custom_value=True,
            )
            compare_answer = gr.Textbox(label="Forced expert's answer", lines=6, interactive=False)
            compare_button = gr.Button("Answer with this expert")
    with gr.Accordion("/route output (JSON)", open=False):
        route_json = gr.JSON()

    def routed_answer(prompt: str, decision: dict[str, Any], max_new_tokens: float) -> Iterator[str]:
        if not decision.get("can_generate"):
            yield f"{decision.get('expert')!r} has no model (it was added from text); pick one under 'Compare with'."
            return
        yield from endpoints.generate(holder, prompt, decision["expert"], max_new_tokens)

    def compare(prompt: str, expert: str | None, max_new_tokens: float) -> Iterator[str]:
        if expert:
            yield from endpoints.generate(holder, prompt, expert, max_new_tokens)

    def generate(prompt: object = None, expert: object = None, max_new_tokens: object = 64) -> Iterator[str]:
        yield from endpoints.generate(holder, prompt, expert, max_new_tokens)

    generation: dict[str, Any] = {"concurrency_id": "generation", "concurrency_limit": 1}
    gr.on(
        [route_button.click, prompt.submit],
        partial(endpoints.route, holder),
        prompt,
        route_json,
        api_name="route",
        concurrency_limit=16,
        **PUBLIC,
    ).success(render_route, route_json, [decision, scores, votes], api_visibility="private").success(
        routed_answer, [prompt, route_json, max_new_tokens], answer, api_visibility="private", **generation
    ).success(compare, [prompt, compare_with, max_new_tokens], compare_answer, api_visibility="private", **generation)
    compare_button.click(
        generate, [prompt, compare_with, max_new_tokens], compare_answer, api_name="generate", **PUBLIC, **generation
    )
    return compare_with


def experts_tab(holder: RouterHolder, compare_with: gr.Dropdown) -> None:
    """The expert table with add / remove / reset; every edit re-renders the table and both expert dropdowns."""
    table = gr.Dataframe(
        headers=["name", "source", "tokens", "answers"], interactive=False, label="Experts", elem_id="experts"
    )
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown(
                f"**Add an expert** from its text: paste it and/or upload a `.txt` or `.jsonl` file (one "
                f'`{{"text": ...}}` per line), at most {endpoints.MAX_EXPERT_TEXT_BYTES // 1_000_000} MB. It is '
                "fitted in seconds and routes at once; it has no model, so it cannot answer."
            )
            name = gr.Textbox(label="Name", placeholder="cooking", max_length=64)
            text = gr.Textbox(label="Text", lines=6, placeholder="Text of the new domain...")
            upload = gr.File(label="or a .txt / .jsonl file", file_types=[".txt", ".jsonl"])
            add_button = gr.Button("Add expert", variant="primary")
        with gr.Column(scale=1):
            # value=None: no expert preselected, so a call of /remove_expert without a name removes nothing
            remove_choice = gr.Dropdown(
                holder.current.expert_names, value=None, label="Expert to remove", allow_custom_value=True
            )
            remove_button = gr.Button("Remove expert", variant="stop")
            reset_button = gr.Button("Reset to the starting router")
    with gr.Accordion("/experts output (JSON)", open=False):
        experts_json = gr.JSON()
    outputs = [table, remove_choice, compare_with]
    render: dict[str, Any] = {"fn": render_experts, "inputs": experts_json, "outputs": outputs}
    add_button.click(
        partial(endpoints.add_expert, holder), [name, text, upload], experts_json, api_name="add_expert", **PUBLIC
    ).success(api_visibility="private", **render)
    remove_button.click(
        partial(endpoints.remove_expert, holder), remove_choice, experts_json, api_name="remove_expert", **PUBLIC
    ).success(api_visibility="private", **render)
    reset_button.click(partial(endpoints.reset, holder), None, experts_json, api_name="reset").success(
        api_visibility="private", **render
    )
    # no trigger and no input: runs when the page loads (and serves /experts)
    gr.on(None, partial(endpoints.experts, holder), None, experts_json, api_name="experts").success(
        api_visibility="private", **render
    )


def evaluation_tab(holder: RouterHolder) -> None:
    gr.Markdown(
        f"Routing accuracy of the **current** router (with your edits) on the ir3de-multidomain test split, each "
        f"prompt cut to its first {PROMPT_TOKENS} tokens."
    )
    button = gr.Button("Evaluate the current router", variant="primary")
    summary = gr.Markdown()
    with gr.Row():
        image = gr.Image(label="Confusion matrix (share of each true domain)", type="filepath", format="png")
        recall = gr.Dataframe(headers=["domain", "recall"], label="Recall per domain", interactive=False)
    confusion = gr.Markdown()

    def evaluate(progress: gr.Progress = gr.Progress()) -> tuple[str, Image.Image, pd.DataFrame, str]:  # noqa: B008
        # The plot's folder goes when the call ends, failed or not; Gradio saves the returned image in its own cache.
        with tempfile.TemporaryDirectory(prefix="ir3de-eval-") as folder:
            report = evaluate_router(holder, Path(folder), progress)
            with Image.open(Path(folder) / "confusion.png") as png:
                plot = png.copy()  # read into memory before the file goes
        prompts = sum(sum(row) for row in report.confusion)
        text = (
            f"**Accuracy {report.accuracy:.1%}**, normalised accuracy {report.normalized_accuracy:.1%} on "
            f"{prompts:,} prompts ({len(holder.current.expert_names)} experts)."
        )
        rows = pd.DataFrame({"domain": list(report.recall), "recall": [f"{v:.1%}" for v in report.recall.values()]})
        return text, plot, rows, report.confusion_markdown()

    button.click(evaluate, None, [summary, image, recall, confusion], api_name="evaluate", concurrency_limit=1)


def render_route(result: dict[str, Any]) -> tuple[str, Any, Any]:
    """The /route JSON as the decision text, the score bars and the highlighted token votes."""
    names = list(result["scores"])
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    if result["expert"] is None:
        text = "**No decision**: the prompt has only special tokens."
    else:
        margin = "n/a (one expert)" if result["margin"] is None else f"{result['margin']:.3f}"
        text = f"Routed to **{result['expert']}**, margin {margin} ({result['aggregation']} over the tokens)."
        if not result["can_generate"]:
            text += " It was added from text and has no model to answer."
    bars = pd.DataFrame({"expert": names, "score": list(result["scores"].values())})
    tokens = [(piece["text"], piece["vote"]) for piece in result["tokens"]]
    return (
        text,
        gr.BarPlot(value=bars, color_map=colors, sort=None),
        gr.HighlightedText(value=tokens, color_map=colors),
    )


def render_experts(table: dict[str, Any]) -> tuple[pd.DataFrame, Any, Any]:
    """The /experts JSON as the table and the choices of the remove and compare dropdowns."""
    rows = table["experts"]
    frame = pd.DataFrame(
        {
            "name": [row["name"] for row in rows],
            "source": [row["source"] for row in rows],
            "tokens": [f"{row['tokens']:,}" for row in rows],
            "answers": ["yes" if row["can_generate"] else "no (routes only)" for row in rows],
        }
    )
    return frame, gr.Dropdown(choices=[row["name"] for row in rows]), gr.Dropdown(choices=_answering(table))


def _answering(table: dict[str, Any]) -> list[str]:
    return [row["name"] for row in table["experts"] if row["can_generate"]]


def launch_options() -> dict[str, Any]:
    """What Gradio 6 takes at launch rather than in Blocks: the theme, an upload cap above the text cap (a .jsonl
    file carries its JSON around the text), and ``show_error``: the visitor's mistakes are refused with `gr.Error`
    by `endpoints`, and the few that Gradio itself refuses before any handler runs (a file argument that is not an
    uploaded file, missing input values in a raw HTTP call) then still reach the caller as their message instead of
    an empty error."""
    return {"theme": gr.themes.Soft(), "max_file_size": 3 * endpoints.MAX_EXPERT_TEXT_BYTES, "show_error": True}


def main() -> None:
    build_demo(RouterHolder(load_router)).queue(default_concurrency_limit=4).launch(**launch_options())


if __name__ == "__main__":
    main()
