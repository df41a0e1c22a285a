# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The IR3DE Space: see the routing decision, hear the chosen expert, chat, add and remove experts live.

    python space_app/app.py                            # the demo router (SmolLM2-135M + six LoRA experts)
    IR3DE_ROUTER=org/router python space_app/app.py    # a router from the Hub or a local directory

API endpoints (stable names, see space_app/README.md): /route, /generate, /chat, /add_expert, /remove_expert, /reset,
/experts, /evaluate. They receive the visitor's values unprocessed (`preprocess=False`) and `endpoints` checks them,
so every refusal reaches the visitor as a message; every other event is private (the page's own, not an API).

Each visitor session (a browser tab, one `gradio_client.Client`) edits its own copy of the router
(`router_snapshots.SessionRouters`, keyed by Gradio's ``session_hash``): nobody can remove experts for everyone.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Generator, Hashable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import display
import endpoints  # the helper modules next to this file (the script's folder is on sys.path)
import gradio as gr
import pandas as pd
from benchmark_eval import PROMPT_TOKENS, evaluate_router
from PIL import Image, ImageOps
from public_api import PublicEndpointsOnly
from router_snapshots import RouterHolder, SessionEvicted, SessionRouters
from starlette.middleware import Middleware

from ir3de_hf import IR3DERouterModel

__all__ = ["EXAMPLES", "build_demo", "launch_options", "links_markdown", "load_router", "main"]

ROUTER_ENV = "IR3DE_ROUTER"
BENCHMARK_ENV = "IR3DE_BENCHMARK"  # the Hub id of the published ir3de-multidomain dataset, for its link
PAPER = "https://arxiv.org/abs/2606.06098"
# The public events take the visitor's values as sent, unprocessed: a component's own preprocessing would refuse some
# of them with an empty error (a Slider given "abc") or quietly change them (2.5 tokens, a number as the prompt), so
# `endpoints` checks every value itself and refuses with a message naming the problem.
PUBLIC: dict[str, Any] = {"preprocess": False}
INTRO = """# IR3DE: a linear router for domain-expert LLMs
Each prompt token looks up its row of a ridge-regression score table; the tokens' scores decide which expert answers.
Type a prompt (or pick an example), see which expert each token votes for, and hear the chosen expert's answer.
Your edits under *Experts* change **your session's** router only."""
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
DEFAULT_MAX_NEW_TOKENS = 48


def load_router() -> IR3DERouterModel:
    """The router named by ``$IR3DE_ROUTER`` (Hub id or local directory), else the demo router."""
    source = os.environ.get(ROUTER_ENV)
    if source:
        return IR3DERouterModel.from_pretrained(source)
    from ir3de_hf.demo import load_demo_router

    return load_demo_router()


def build_demo(routers: SessionRouters) -> gr.Blocks:
    """The Space's UI over ``routers``; every event calls a function of `endpoints` with the visitor's session."""
    with gr.Blocks(title="IR3DE router") as demo:
        gr.Markdown(INTRO)
        gr.Markdown(links_markdown(routers.start), elem_id="links")
        with gr.Tab("Route & generate"):
            compare_with = route_tab(routers, EXAMPLES)
        with gr.Tab("Chat"):
            chat_tab(routers)
        with gr.Tab("Experts"):
            experts_tab(routers, compare_with)
        with gr.Tab("Evaluation"):
            evaluation_tab(routers)

        def end_session(request: gr.Request) -> None:
            routers.end(request.session_hash)

        demo.unload(end_session)  # the visitor closed the tab: their router goes
    _privatise_undocumented(demo)
    return demo


def session(routers: SessionRouters, request: gr.Request | None) -> RouterHolder:
    """The visitor's session (a call without a request, e.g. from Python, is the session ``None``). A session whose
    router was evicted since its last call is told so: this call is refused with the reason, the next one runs on the
    starting router."""
    try:
        return routers.session(_key(request))
    except SessionEvicted as evicted:
        raise gr.Error(str(evicted), title="Session cleared", print_exception=False) from evicted


def sampling_controls(render: bool = True) -> tuple[gr.Slider, gr.Slider, gr.Slider]:
    """max new tokens, temperature (0: greedy) and top-p, with the ranges `endpoints` accepts."""
    tokens = gr.Slider(
        1, endpoints.MAX_NEW_TOKENS, value=DEFAULT_MAX_NEW_TOKENS, step=1, label="max tokens", render=render
    )
    temperature = gr.Slider(
        0, endpoints.MAX_TEMPERATURE, value=0.0, step=0.05, label="temperature (0: greedy)", render=render
    )
    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p", render=render)
    return tokens, temperature, top_p


def route_tab(routers: SessionRouters, examples: dict[str, str]) -> gr.Dropdown:
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
            route_button = gr.Button("Route & answer", variant="primary", elem_id="route-button")
            with gr.Row(elem_id="sampling"):
                max_new_tokens, temperature, top_p = sampling_controls()
            gr.Examples(
                [[text] for text in examples.values()],
                [prompt],
                example_labels=list(examples),
                api_visibility="private",
            )
        with gr.Column(scale=2):
            decision = gr.Markdown("The decision appears here.", elem_id="decision")
            scores = gr.BarPlot(
                x="expert",
                y="score",
                color="expert",
                colors_in_legend=[],  # one bar per expert, named on the axis: no legend (it repeated "expert")
                label="Expert scores",  # no fixed height: a fixed one clips the axis labels under the label badge
                elem_id="scores",
            )
    votes = gr.HighlightedText(
        label="Token votes: each token coloured by the expert its own score prefers (· a space, ⏎ a line end)",
        show_legend=True,
        combine_adjacent=True,
        elem_id="votes",
    )
    with gr.Row():
        answer = gr.Textbox(label="Routed answer", lines=6, interactive=False, elem_id="answer")
        with gr.Column():
            compare_with = gr.Dropdown(
                _answering(endpoints.experts(routers.session(None))),  # the starting router's experts
                value=None,
                label="Compare with",
                info="force this expert on the same prompt, side by side",
                allow_custom_value=True,
                elem_id="compare-with",
            )
            compare_answer = gr.Textbox(
                label="Forced expert's answer", lines=6, interactive=False, elem_id="compare-answer"
            )
            compare_button = gr.Button("Answer with this expert")
    with gr.Accordion("/route output (JSON)", open=False):
        route_json = gr.JSON()

    def route(prompt: object = None, request: gr.Request | None = None) -> dict[str, Any]:
        return endpoints.route(session(routers, request), prompt)

    answers = LatestAnswers()

    def show_decision(result: dict[str, Any], request: gr.Request | None = None) -> tuple[str, Any, Any, str, str]:
        answers.start_new(_key(request))  # the answers still streaming for the previous prompt stop
        return render_route(result)

    def routed_answer(
        prompt: str,
        decision: dict[str, Any],
        max_new_tokens: float,
        temperature: float,
        top_p: float,
        request: gr.Request | None = None,
    ) -> Iterator[str]:
        if not decision.get("can_generate"):
            yield f"{decision.get('expert')!r} has no model (it was added from text); pick one under 'Compare with'."
            return
        holder = session(routers, request)
        stream = endpoints.generate(holder, prompt, decision["expert"], max_new_tokens, temperature, top_p)
        yield from answers.until_superseded(_key(request), stream)

    def compare(
        prompt: str,
        expert: str | None,
        max_new_tokens: float,
        temperature: float,
        top_p: float,
        request: gr.Request | None = None,
    ) -> Iterator[str]:
        if expert:
            holder = session(routers, request)
            stream = endpoints.generate(holder, prompt, expert, max_new_tokens, temperature, top_p)
            yield from answers.until_superseded(_key(request), stream)

    def generate(
        prompt: object = None,
        expert: object = None,
        max_new_tokens: object = DEFAULT_MAX_NEW_TOKENS,
        temperature: object = 0.0,
        top_p: object = 1.0,
        request: gr.Request | None = None,
    ) -> Iterator[str]:
        holder = session(routers, request)
        stream = endpoints.generate(holder, prompt, expert, max_new_tokens, temperature, top_p)
        yield from answers.until_superseded(_key(request), stream)  # only the page starts new decisions

    sampling = [max_new_tokens, temperature, top_p]
    generation: dict[str, Any] = {"concurrency_id": "generation", "concurrency_limit": 1}
    # A new prompt while an answer streams: the new answer runs once the old one has stopped (the default trigger
    # mode, "once", would drop it). Gradio's `cancels` is not used: it left the new answer waiting for good.
    latest: dict[str, Any] = {"trigger_mode": "always_last"}
    triggers = [route_button.click, prompt.submit]
    # In the browser, at once: the previous prompt's answers go, not when the new decision comes.
    gr.on(triggers, None, None, [answer, compare_answer], js="() => ['', '']", api_visibility="private")
    gr.on(triggers, route, prompt, route_json, api_name="route", concurrency_limit=16, **PUBLIC).success(
        show_decision, route_json, [decision, scores, votes, answer, compare_answer], api_visibility="private"
    ).success(
        routed_answer, [prompt, route_json, *sampling], answer, api_visibility="private", **generation, **latest
    ).success(
        compare, [prompt, compare_with, *sampling], compare_answer, api_visibility="private", **generation, **latest
    )
    compare_button.click(
        generate, [prompt, compare_with, *sampling], compare_answer, api_name="generate", **PUBLIC, **generation
    )
    return compare_with


class LatestAnswers:
    """Which decision each page session shows: when the page shows a new decision, the answers still streaming for
    the previous one stop (their expert finishes in the background, `endpoints` waits for it) and write no more.

    Args:
        limit: how many sessions are remembered (a forgotten one simply starts again at 0).
    """

    def __init__(self, limit: int = 4096) -> None:
        self._lock = threading.Lock()
        self._decisions: OrderedDict[Hashable, int] = OrderedDict()
        self._limit = limit

    def current(self, session: Hashable) -> int:
        with self._lock:
            return self._decisions.get(session, 0)

    def start_new(self, session: Hashable) -> None:
        with self._lock:
            self._decisions[session] = self._decisions.get(session, 0) + 1
            self._decisions.move_to_end(session)
            while len(self._decisions) > self._limit:
                self._decisions.popitem(last=False)

    def until_superseded(self, session: Hashable, stream: Generator[str, None, None]) -> Iterator[str]:
        """``stream``'s texts until the page shows a newer decision; then ``stream`` is closed."""
        decision = self.current(session)
        with closing(stream):
            for text in stream:
                if self.current(session) != decision:
                    return
                yield text


def _key(request: gr.Request | None) -> Hashable:
    return None if request is None else request.session_hash


def chat_tab(routers: SessionRouters) -> None:
    """A chat: every turn is routed on the last user message alone; the answer starts with the chosen expert."""
    config = routers.start.config
    if config.min_confidence is not None:
        rule = f"calibrated probability ≥ {config.min_confidence:.3g}"
    elif config.min_margin is not None:
        rule = f"margin ≥ {config.min_margin:g}"
    else:
        rule = "no threshold set: every decision with a usable token"
    gr.Markdown(
        "Each message is routed **on its own**; the chosen expert answers the whole conversation. The first line of "
        f"an answer names the expert, how sure the router was, and whether it was confident ({rule}) or unsure."
    )

    def chat(
        message: str,
        history: list[dict[str, Any]],
        max_new_tokens: float,
        temperature: float,
        top_p: float,
        request: gr.Request | None = None,
    ) -> Iterator[str]:
        holder = session(routers, request)
        yield from endpoints.chat(holder, message, history, max_new_tokens, temperature, top_p)

    interface = gr.ChatInterface(
        chat,
        chatbot=gr.Chatbot(
            height=420,
            label="Routed chat",
            placeholder="Ask anything: a contract clause, some Python, a symptom, a story to continue, or French.",
            elem_id="chatbot",
            buttons=["copy"],
        ),
        textbox=gr.Textbox(
            placeholder="Ask anything; each message goes to the expert the router picks for it",
            max_length=endpoints.MAX_PROMPT_CHARS,
            elem_id="chat-input",
        ),
        additional_inputs=list(sampling_controls(render=False)),  # unrendered: ChatInterface puts them under the chat
        additional_inputs_accordion="Generation settings",
        api_name="chat_page",
        api_visibility="private",  # the page's own; /chat below checks an API caller's values first
        concurrency_limit=1,
        fill_height=False,
    )

    def chat_api(
        message: object = None,
        max_new_tokens: object = DEFAULT_MAX_NEW_TOKENS,
        temperature: object = 0.0,
        top_p: object = 1.0,
        history: object = None,
        request: gr.Request | None = None,
    ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """One chat turn of the session's conversation: routes the message, streams the chosen expert's answer
        (first line: the decision), and keeps the turn in the session's history."""
        holder = session(routers, request)
        history = endpoints.chat_history(history)[-endpoints.MAX_CHAT_MESSAGES :]  # what the expert sees is kept
        for text in endpoints.chat(holder, message, history, max_new_tokens, temperature, top_p):
            yield text, [*history, {"role": "user", "content": message}, {"role": "assistant", "content": text}]

    # gr.ChatInterface's own API event would hand a bad message to Gradio's chat code before `endpoints` sees it;
    # this one takes the values unprocessed, like every public endpoint, with the session's chat history.
    answer = gr.Textbox(visible=False, label="Answer")
    gr.Button(visible=False).click(
        chat_api,
        [interface.textbox, *interface.additional_inputs, interface.chatbot_state],
        [answer, interface.chatbot_state],
        api_name="chat",
        concurrency_id="generation",
        concurrency_limit=1,
        **PUBLIC,
    )


def experts_tab(routers: SessionRouters, compare_with: gr.Dropdown) -> None:
    """The expert table with add / remove / reset; every edit re-renders the table and both expert dropdowns."""
    gr.Markdown("Edits apply to **your session** only: other visitors keep their own router.")
    table = gr.Dataframe(
        headers=["name", "source", "tokens", "answers"],
        datatype=["str", "markdown", "str", "str"],
        interactive=False,
        label="Experts",
        elem_id="experts",
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
                routers.start.expert_names, value=None, label="Expert to remove", allow_custom_value=True
            )
            remove_button = gr.Button("Remove expert", variant="stop")
            reset_button = gr.Button("Reset to the starting router")
    with gr.Accordion("/experts output (JSON)", open=False):
        experts_json = gr.JSON()

    def add_expert(
        name: object = None, text: object = None, file: object = None, request: gr.Request | None = None
    ) -> dict[str, Any]:
        return endpoints.add_expert(session(routers, request), name, text, file)

    def remove_expert(name: object = None, request: gr.Request | None = None) -> dict[str, Any]:
        return endpoints.remove_expert(session(routers, request), name)

    def reset(request: gr.Request | None = None) -> dict[str, Any]:
        return endpoints.reset(session(routers, request))

    def experts(request: gr.Request | None = None) -> dict[str, Any]:
        return endpoints.experts(session(routers, request))

    outputs = [table, remove_choice, compare_with]
    render: dict[str, Any] = {"fn": render_experts, "inputs": experts_json, "outputs": outputs}
    add_button.click(add_expert, [name, text, upload], experts_json, api_name="add_expert", **PUBLIC).success(
        api_visibility="private", **render
    )
    remove_button.click(remove_expert, remove_choice, experts_json, api_name="remove_expert", **PUBLIC).success(
        api_visibility="private", **render
    )
    reset_button.click(reset, None, experts_json, api_name="reset").success(api_visibility="private", **render)
    # no trigger and no input: runs when the page loads (and serves /experts)
    gr.on(None, experts, None, experts_json, api_name="experts").success(api_visibility="private", **render)


def evaluation_tab(routers: SessionRouters) -> None:
    gr.Markdown(
        f"Routing accuracy of **your session's** router (with your edits) on the ir3de-multidomain test split, each "
        f"prompt cut to its first {PROMPT_TOKENS} tokens."
    )
    button = gr.Button("Evaluate the current router", variant="primary")
    summary = gr.Markdown(elem_id="evaluation-summary")
    with gr.Row():
        image = gr.Image(
            label="Confusion matrix",
            type="filepath",
            format="png",
            elem_id="confusion",
        )
        recall = gr.Dataframe(headers=["domain", "recall"], label="Recall per domain", interactive=False)
    confusion = gr.Markdown()

    def evaluate(
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[str, Image.Image, pd.DataFrame, str]:
        holder = session(routers, request)
        # The plot's folder goes when the call ends, failed or not; Gradio saves the returned image in its own cache.
        with tempfile.TemporaryDirectory(prefix="ir3de-eval-") as folder:
            report = evaluate_router(holder, Path(folder), progress)
            with Image.open(Path(folder) / "confusion.png") as png:
                plot = clear_of_toolbar(png)  # read into memory before the file goes
        prompts = sum(sum(row) for row in report.confusion)
        experts = len(holder.current.expert_names)
        text = (
            f"**Accuracy {report.accuracy:.1%}**, normalised accuracy {report.normalized_accuracy:.1%} on "
            f"{prompts:,} prompts ({experts} experts). Confusion matrix below: rows are the true domains, columns "
            "the experts they were routed to."
        )
        rows = pd.DataFrame({"domain": list(report.recall), "recall": [f"{v:.1%}" for v in report.recall.values()]})
        return text, plot, rows, report.confusion_markdown()

    button.click(evaluate, None, [summary, image, recall, confusion], api_name="evaluate", concurrency_limit=1)


def clear_of_toolbar(png: Image.Image) -> Image.Image:
    """The plot with a white band on top, so that the image's toolbar (download, full screen) does not cover its
    title."""
    band = max(40, png.height // 7)
    return ImageOps.expand(png.convert("RGB"), border=(0, band, 0, 0), fill="white")


def render_route(result: dict[str, Any]) -> tuple[str, Any, Any, str, str]:
    """The /route JSON as the decision text, the score bars and the highlighted token votes; clears both answers."""
    names = list(result["scores"])
    colors = display.expert_colors(names)
    if result["expert"] is None:
        text = "**No decision**: the prompt has no token the router can use (empty, blank or only special tokens)."
    else:
        text = (
            f"Routed to **{result['expert']}**, {margin_text(result)}. Aggregation: {result['aggregation']} over "
            "the tokens."
        )
        if not result["can_generate"]:
            text += " It was added from text and has no model to answer."
    bars = pd.DataFrame({"expert": names, "score": list(result["scores"].values())})
    tokens = [
        (display.visible_token(piece["text"]) if piece["vote"] else piece["text"], piece["vote"])
        for piece in result["tokens"]
    ]
    return (
        text,
        gr.BarPlot(value=bars, color_map=colors, sort=None, x_label_angle=-30 if len(names) > 7 else 0),
        gr.HighlightedText(value=tokens, color_map=colors),
        "",
        "",
    )


def margin_text(result: dict[str, Any]) -> str:
    """``"margin 0.164: confident (≥ 0.03)"``, with a calibrated router ``"probability 0.997: confident (≥ 0.96)"``,
    or why there is no margin (the rule of `endpoints.judged_by`, with why a decision is unsure)."""
    if result["margin"] is None:
        return "the only expert (no margin)"
    measure, threshold = endpoints.judged_by(result)
    if result["confidence"] == "confident":
        why = ", the calibrated threshold" if result.get("min_confidence") is not None else ""
    elif result.get("min_confidence") is not None:
        why = ", the calibrated threshold: another expert is likely"
    else:
        why = ", another expert scored close"
    return f"{measure}: **{result['confidence']}** ({threshold}{why})"


def render_experts(table: dict[str, Any]) -> tuple[pd.DataFrame, Any, Any]:
    """The /experts JSON as the table (sources as Hub links) and the choices of the remove and compare dropdowns."""
    rows = table["experts"]
    frame = pd.DataFrame(
        {
            "name": [row["name"] for row in rows],
            "source": [f"[{row['source']}]({row['link']})" if row["link"] else row["source"] for row in rows],
            "tokens": [f"{row['tokens']:,}" for row in rows],
            "answers": ["yes" if row["can_generate"] else "no (routes only)" for row in rows],
        }
    )
    return frame, gr.Dropdown(choices=[row["name"] for row in rows]), gr.Dropdown(choices=_answering(table))


def links_markdown(router: IR3DERouterModel) -> str:
    """Links to the paper, the benchmark, the router, its encoder and its experts' models (and their base models):
    Hub pages for Hub ids, never a local path (a local source is named "local")."""
    router_source = os.environ.get(ROUTER_ENV)
    if router_source:
        link = endpoints.hub_link(router_source)
        shown = f"[{router_source}]({link})" if link else "stored with this Space (local)"
    else:
        shown = "the `ir3de_hf` demo router (built on start)"
    benchmark = os.environ.get(BENCHMARK_ENV)
    benchmark_link = endpoints.hub_link(f"datasets/{benchmark}") if benchmark else None
    experts = [
        _model_link(spec.name, spec.source, spec.revision) for spec in router.config.expert_specs if spec.source
    ]
    bases = {spec.base_model for spec in router.config.expert_specs if spec.source and spec.base_model}
    parts = [
        f"**Paper**: [arXiv 2606.06098]({PAPER})",
        f"**Benchmark**: [{benchmark}]({benchmark_link})"
        if benchmark_link
        else "**Benchmark**: ir3de-multidomain (bundled with `ir3de_hf`: `ir3de_hf.data.load_benchmark()`)",
        f"**Router**: {shown}",
        f"**Encoder**: {_model_link(None, router.config.encoder, router.config.encoder_revision)}",
    ]
    if experts:
        parts.append("**Expert models**: " + ", ".join(experts))
    if bases:
        parts.append("**Base model**: " + ", ".join(_model_link(None, base) for base in sorted(bases)))
    return " · ".join(parts)


def _model_link(name: str | None, source: str | None, revision: str | None = None) -> str:
    """``[org/model](https://huggingface.co/org/model)`` for a Hub id; ``"name (local)"`` (or ``"local"``) else."""
    link = endpoints.hub_link(source, revision)
    if link:
        return f"[{name or source}]({link})"
    return f"{name} (local)" if name else "local"


def _answering(table: dict[str, Any]) -> list[str]:
    return [row["name"] for row in table["experts"] if row["can_generate"]]


def _privatise_undocumented(demo: gr.Blocks) -> None:
    """`gr.ChatInterface` registers its page events as "undocumented" (callable by API clients): make them private
    like every other page event, so that the API is the public endpoints only."""
    for block_fn in demo.fns.values():
        if block_fn.api_visibility == "undocumented":
            block_fn.api_visibility = "private"


def launch_options() -> dict[str, Any]:
    """What Gradio 6 takes at launch rather than in Blocks: the theme, an upload cap above the text cap (a .jsonl
    file carries its JSON around the text), and ``show_error``: the visitor's mistakes are refused with `gr.Error`
    by `endpoints`, and the few that Gradio itself refuses before any handler runs (a file argument that is not an
    uploaded file, missing input values in a raw HTTP call) then still reach the caller as their message instead of
    an empty error. ``app_kwargs`` adds `public_api.PublicEndpointsOnly`: only the public endpoints can be called by
    name."""
    middleware = [Middleware(PublicEndpointsOnly)]  # a raw HTTP call of a page event by name: a 404, not a run
    return {
        "theme": gr.themes.Soft(),
        "max_file_size": 3 * endpoints.MAX_EXPERT_TEXT_BYTES,
        "show_error": True,
        "app_kwargs": {"middleware": middleware},
    }


def main() -> None:
    build_demo(SessionRouters(load_router)).queue(default_concurrency_limit=4).launch(**launch_options())


if __name__ == "__main__":
    main()
