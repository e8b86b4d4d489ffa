"""Figures, explorers and the acceptance view render on small synthetic inputs, headless (Agg, no browser)."""

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from medusa_lib import plots  # noqa: E402
from medusa_lib.decoding import GenerateOutput  # noqa: E402
from medusa_lib.tree import Tree, standard_accuracies  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def small_tree():
    return Tree.from_choices([[0], [1], [0, 0]])


def fake_output():
    return GenerateOutput(sequences=torch.tensor([[1, 2, 3, 4, 5, 6]]), accept_lengths=[2, 1],
                          candidates=[torch.tensor([4, 9, 5, 7]), torch.tensor([6, 8, 2, 3])],
                          accepted_nodes=[[0, 1], [0]], prompt_len=3)


FIGURES = {
    "head_accuracy": lambda: plots.plot_head_accuracy([[0.6, 0.7, 0.8, 0.85, 0.9], [0.4, 0.5, 0.6, 0.65, 0.7]]),
    "head_accuracy_top3": lambda: plots.plot_head_accuracy(torch.rand(3, 3).cumsum(1) / 3, topk=(1, 3, 5),
                                                           labels=["a", "b", "c"]),
    "topk_curves": lambda: plots.plot_topk_curves(torch.rand(3, 10).cumsum(1) / 10),
    "accept_hist": lambda: plots.plot_accept_hist([1, 2, 3, 2, 2, 1, 4]),
    "accept_trace": lambda: plots.plot_accept_trace([1, 2, 3, 2, 2, 1, 4, 3, 2, 1, 2], window=4),
    "accept_trace_short": lambda: plots.plot_accept_trace([2, 3], window=8),
    "tree_mask": lambda: plots.plot_tree_mask(small_tree()),
    "tree_mask_past": lambda: plots.plot_tree_mask(small_tree(), past_len=3, labels=["a", "b", "$c", "d\n"]),
    "tree": lambda: plots.plot_tree(small_tree()),
    "tree_tokens": lambda: plots.plot_tree(small_tree(), tokens=["The", " cat", " dog", " sat"], accepted=[0, 1, 3]),
    "tree_big": lambda: plots.plot_tree(Tree.mc_sim_7b_63(), accepted=[0, 1, 2]),
    "speedup": lambda: plots.plot_speedup([
        {"method": "medusa", "category": "code", "speedup": 2.1},
        {"method": "medusa", "category": "chat", "speedup": 1.7},
        {"method": "chain", "category": "code", "speedup": 1.4}]),
    "tree_sweep": lambda: plots.plot_tree_sweep([
        {"nodes": n, "tau": 1 + n ** (0.3 * s), "tokens_per_s": 20 * s + n - n ** 2 / 40, "tree": t}
        for t, s in (("standard", 1.0), ("chain", 0.8)) for n in (2, 4, 8, 16, 32)]),
    "tree_sweep_expected": lambda: plots.plot_tree_sweep([
        {"nodes": n, "tau": 1 + n ** 0.2, "expected_tau": 1 + n ** 0.25, "tokens_per_s": 9 + n / 8} for n in (2, 4, 8)],
        baseline=10.0),
    "predicted_speedup": lambda: plots.plot_predicted_speedup([
        {"nodes": n, "predicted": 1.2 - n / 40, "measured": 1.1 - n / 30} for n in (2, 4, 8, 16)]),
    "tree_bonus": lambda: plots.plot_tree(small_tree(), tokens=["The", " cat", " dog", " sat"], accepted=[0, 1, 3],
                                          bonus=" on"),
    "tau_by_category": lambda: plots.plot_speedup([
        {"method": "medusa", "category": "code", "tau": 1.6}, {"method": "pld", "category": "code", "tau": 1.2}],
        key="tau"),
    "step_times": lambda: plots.plot_step_times({
        "greedy": ([{"total": 0.1}] * 3, 1.0),
        "medusa": ([{"heads": 0.02, "forward": 0.15, "lm_head": 0.02, "total": 0.2}] * 3, 1.4)}),
    "tau_by_temperature": lambda: plots.plot_tau_by_temperature([
        {"mode": m, "temperature": t, "tau": 1.5 - t / 2 + (m == "typical") / 5}
        for m in ("typical", "sample") for t in (0.3, 0.7, 1.0)]),
    "learning_curve": lambda: plots.plot_learning_curve([
        {"positions": p, "top1": 0.2 + 0.05 * i + 0.01 * h, "top5": 0.4 + 0.05 * i, "head": h, "source": s}
        for h in (1, 2) for s in ("shareGPT", "self") for i, p in enumerate((1e3, 1e4, 1e5))]),
    "loss_curves": lambda: plots.plot_loss_curves([
        {"step": s, "loss": 5 / (s + 1), "head_losses": [2 / (s + 1), 3 / (s + 1)]} for s in range(10)]),
    "verify_cost": lambda: plots.plot_verify_cost({1: 1.0, 2: 1.1, 4: 1.2, 8: 1.5, 16: 2.2}),
    "loss_curves_total_only": lambda: plots.plot_loss_curves([{"step": s, "loss": 1 / (s + 1)} for s in range(5)]),
}


def test_the_bonus_token_follows_the_accepted_path():
    fig = plots.plot_tree(small_tree(), tokens=["The", " cat", " dog", " sat"], accepted=[0, 1, 3], bonus=" on")
    texts = {t.get_text(): t.get_position() for t in fig.axes[0].texts}
    assert texts["bonus:  on"] == (texts[" sat"][0] + 1, texts[" sat"][1])  # one level past the deepest accepted
    none = plots.plot_tree(small_tree(), tokens=["The", " cat", " dog", " sat"], bonus=" on")  # nothing accepted
    assert not any(t.get_text().startswith("bonus") for t in none.axes[0].texts)


def test_step_parts_split_a_step_and_count_greedy_as_all_model():
    steps = [{"heads": 0.010, "forward": 0.100, "lm_head": 0.020, "total": 0.140},
             {"heads": 0.030, "forward": 0.300, "lm_head": 0.020, "total": 0.360},
             {"heads": 0.020, "forward": 0.200, "lm_head": 0.020, "total": 0.250}]
    parts = plots.step_parts_ms(steps)
    assert parts["draft"] == pytest.approx(20) and parts["verify (forward + logits)"] == pytest.approx(220)
    assert parts["bookkeeping"] == pytest.approx(250 - 240)  # the median step's total, less the parts' medians
    greedy = plots.step_parts_ms([{"total": 0.1}, {"total": 0.3}, {"total": 0.2}])
    assert greedy == {"draft": 0.0, "verify (forward + logits)": pytest.approx(200), "bookkeeping": 0.0}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_has_titles_and_labels(name):
    fig = FIGURES[name]()
    assert isinstance(fig, Figure)
    assert fig.axes
    for ax in fig.axes:
        assert ax.get_title(), f"{name}: an axes has no title"
        assert ax.get_xlabel(), f"{name}: an axes has no x label"
        assert ax.get_ylabel(), f"{name}: an axes has no y label"


def _boxes(fig):
    """{stage name: its box} in a schematic."""
    return {p.get_gid(): p for p in fig.axes[0].patches if p.get_gid()}


def test_architecture_draws_heads_tree_and_mask_with_position_ids():
    tree = Tree.from_choices([[0], [1], [0, 0]])
    fig = plots.plot_architecture(tree, past_len=2)
    heads, drawn, mask = fig.axes
    texts = {t.get_text() for t in heads.texts}
    assert {"lm_head", "head 1", "head 2"} <= texts and "head 3" not in texts  # one box per head of the tree
    assert all(ax.get_title() for ax in fig.axes)
    assert [t.get_text() for t in mask.get_yticklabels()] == ["root @2", "0 @3", "1 @3", "0-0 @4"]


def test_schematic_draws_five_stages():
    fig = plots.plot_schematic()
    assert isinstance(fig, Figure)
    assert list(_boxes(fig)) == ["heads", "tree", "mask", "verify", "accept"]
    assert fig.axes[0].get_title() == "One Medusa decoding step"
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"heads", "tree", "mask", "verify", "accept"} <= texts
    assert len({tuple(b.get_facecolor()) for b in _boxes(fig).values()}) == 1  # nothing emphasised


@pytest.mark.parametrize("highlight", ["tree", 1, ["tree"], ("tree",)])
def test_schematic_highlights_a_stage(highlight):
    fig = plots.plot_schematic(highlight=highlight)
    boxes = _boxes(fig)
    accent = matplotlib.colors.to_rgba(plots.STYLE["accent"])
    assert boxes["tree"].get_facecolor()[:3] == accent[:3]
    assert all(b.get_facecolor()[:3] != accent[:3] for name, b in boxes.items() if name != "tree")
    assert all(b.get_alpha() < 1 for name, b in boxes.items() if name != "tree")  # the others are dimmed
    assert "where we are: tree" in fig.axes[0].get_title()


def test_schematic_highlights_several_stages_on_given_axes():
    fig, ax = plt.subplots()
    assert plots.plot_schematic(highlight=["verify", 4], ax=ax) is fig
    assert "where we are: verify, accept" in ax.get_title()


@pytest.mark.parametrize("bad", ["draft", "Heads", 5, -1, True, 1.0])
def test_schematic_rejects_unknown_stages(bad):
    with pytest.raises(ValueError, match="unknown stage"):
        plots.plot_schematic(highlight=bad)


def test_verify_cost_plots_the_measured_ratios():
    costs = {1: 1.0, 4: 1.3, 16: 2.0}
    line = plots.plot_verify_cost(costs).axes[0].get_lines()[-1]  # the measured curve is drawn last
    assert line.get_xdata().tolist() == [1, 4, 16] and line.get_ydata().tolist() == [1.0, 1.3, 2.0]


def test_plots_compose_on_given_axes():
    fig, (a, b) = plt.subplots(1, 2)
    assert plots.plot_tree(small_tree(), ax=a) is fig
    assert plots.plot_tree_mask(small_tree(), ax=b) is fig


def test_tree_mask_shows_ancestors():
    fig = plots.plot_tree_mask(small_tree(), past_len=2)
    image = fig.axes[0].get_images()[0].get_array()
    tree = small_tree()
    assert image.shape == (tree.num_nodes, 2 + tree.num_nodes)
    assert torch.equal(torch.as_tensor(image[:, 2:]).bool(), tree.ancestor_mask())
    assert image[:, :2].all()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["root", "0", "1", "0-0"]


def test_tree_layout_spreads_leaves():
    tree = Tree.mc_sim_7b_63()
    x, y = plots._tree_layout(tree)
    assert x.tolist() == tree.node_depths().tolist()
    leaf_y = sorted(y[tree.leaves()].tolist())
    assert len(set(leaf_y)) == len(tree.leaves())  # one row per leaf


def test_save_fig_writes_png(tmp_path):
    path = plots.save_fig(plots.plot_accept_hist([1, 2, 2, 3]), tmp_path / "sub" / "hist.png")
    assert path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generation_explorer_steps():
    explorer = plots.GenerationExplorer(fake_output(), small_tree())
    assert explorer.step == 0
    assert explorer.slider.max == 1
    assert explorer.widget.children[0] is explorer.slider
    first_text, first_out = explorer.text.value, explorer.output.outputs
    assert "[4] [9]" in first_text
    assert first_out[0]["data"]["image/png"]
    explorer.slider.value = 1
    assert explorer.step == 1
    assert explorer.text.value != first_text and "[6]" in explorer.text.value
    assert explorer.output.outputs != first_out
    explorer.show(0)
    assert explorer.step == 0 and explorer.slider.value == 0
    assert explorer.text.value == first_text
    assert not plt.get_fignums()  # the explorer closes its figures


def test_generation_explorer_uses_tokenizer():
    class Tok:
        def decode(self, ids):
            return "".join(f"<{i}>" for i in ids)

    explorer = plots.GenerationExplorer(fake_output(), small_tree(), tokenizer=Tok())
    assert "[&lt;4&gt;] [&lt;9&gt;]" in explorer.text.value


def test_generation_explorer_needs_recorded_steps():
    out = GenerateOutput(sequences=torch.tensor([[1, 2]]), accept_lengths=[1], prompt_len=1)
    with pytest.raises(ValueError, match="record=True"):
        plots.GenerationExplorer(out, small_tree())


def test_tree_explorer_rebuilds_tree():
    explorer = plots.TreeExplorer(standard_accuracies(3), n_nodes=4)
    assert explorer.tree.num_nodes == 4
    first_tau, first_out = explorer.tau, explorer.output.outputs
    explorer.n_slider.value = 10
    assert explorer.tree.num_nodes == 10
    assert explorer.tau > first_tau
    assert explorer.output.outputs != first_out
    tau = explorer.tau
    explorer.scale_slider.value = 0.5
    assert explorer.tau < tau
    assert not plt.get_fignums()


def test_topk_curves_one_line_per_head():
    acc = torch.rand(3, 10).cumsum(1) / 10
    fig = plots.plot_topk_curves(acc, labels=["a", "b", "c"])
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3
    assert list(lines[1].get_xdata()) == list(range(1, 11))
    assert torch.allclose(torch.tensor(lines[2].get_ydata(), dtype=torch.float32), acc[2])


def test_split_steps_cuts_tokens_by_accept_length():
    out = fake_output()
    assert plots.split_steps(out.new_tokens, out.accept_lengths) == [[4, 5], [6]]
    with pytest.raises(ValueError, match="add up to"):
        plots.split_steps([1, 2, 3], [1, 1])


def test_show_acceptance_colours_each_step_by_its_length():
    class Tok:
        def decode(self, ids):
            return "".join(f"<{i}>" for i in ids)

    view = plots.show_acceptance([[4, 5], [6], [1, 2, 3, 7, 8, 9]], Tok())
    html_text = view._repr_html_()
    steps = re.findall(r'<span title="(\d) token\(s\) in this step" style="background: (#\w+)[^>]*>([^<]*)</span>',
                       html_text.split("</div>", 1)[1])  # after the legend
    assert [(n, text) for n, _, text in steps] == [("2", "&lt;4&gt;&lt;5&gt;"), ("1", "&lt;6&gt;"),
                                                   ("6", "&lt;1&gt;&lt;2&gt;&lt;3&gt;&lt;7&gt;&lt;8&gt;&lt;9&gt;")]
    colours = [c for _, c, _ in steps]
    assert colours[0] == plots.ACCEPT_COLORS[1] and colours[1] == plots.ACCEPT_COLORS[0]
    assert colours[2] == plots.ACCEPT_COLORS[-1]  # 6 tokens: the last colour, "5+"
    assert "<6>" not in html_text  # token text is escaped
    assert str(view) == "9 tokens in 3 steps; one [ ] per step:\n[<4><5>][<6>][<1><2><3><7><8><9>]"
    assert str(plots.show_acceptance([[3], [4, 5]])).endswith("[3 ][4 5 ]")  # no tokenizer: the ids


def test_explorers_display_their_widget_without_ipywidgets_8_only_api(monkeypatch):
    """Colab ships ipywidgets 7, whose widgets have no _repr_mimebundle_: the explorers hand IPython's display
    the widget itself, which both versions show."""
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs: shown.extend(objs))
    for explorer in (plots.TreeExplorer(standard_accuracies(3), n_nodes=4),
                     plots.GenerationExplorer(fake_output(), small_tree())):
        assert not hasattr(explorer, "_repr_mimebundle_")
        explorer._ipython_display_()
        assert shown[-1] is explorer.widget
