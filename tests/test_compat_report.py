""" Compatibility-matrix reports: labels, summary and violations, tables, heatmap. """
import numpy as np
import pytest
import torch

from sfsc_timm.eval import (
    diagonal_and_cross_width_means, format_compatibility_table, parameter_share_label, plot_compatibility_heatmap,
    summarize_compatibility,
)

WIDTHS = (0.25, 0.5, 0.75, 1.0)
# rows = query width, columns = gallery width. Two breaks of M[q][g] >= M[q][q] for g wider than q:
#   (0.25 -> 0.75): 0.40 < 0.50 and (0.5 -> 1.0): 0.59 < 0.60. Below the diagonal nothing is checked (0.10).
MATRIX = [
    [0.50, 0.55, 0.40, 0.70],
    [0.10, 0.60, 0.65, 0.59],
    [0.10, 0.60, 0.70, 0.75],
    [0.10, 0.60, 0.70, 0.80],
]


@pytest.mark.parametrize('width, label', [
    (0.25, 'φ_1/16'), (0.5, 'φ_1/4'), (0.75, 'φ_9/16'), (1.0, 'φ'), (1, 'φ'), (0.125, 'φ_1/64'), (0.3, 'φ_9/100'),
    (1 / 3, 'φ_1/9'), (np.float32(0.5), 'φ_1/4'),
])
def test_parameter_share_label(width, label):
    assert parameter_share_label(width) == label


@pytest.mark.parametrize('width', [0, -0.5, 1.5, True, 'half'])
def test_parameter_share_label_rejects_bad_widths(width):
    with pytest.raises(ValueError, match=r'width must be a number in \(0, 1\]'):
        parameter_share_label(width)


def test_summary_by_hand():
    summary = summarize_compatibility(MATRIX, WIDTHS)
    # sum of the 16 entries: 2.15 + 1.94 + 2.15 + 2.20 = 8.44 -> mean 0.5275
    assert summary['mean'] == pytest.approx(0.5275)
    assert summary['self_compatible'] is False
    assert summary['violations'] == [(0.25, 0.75), (0.5, 1.0)]
    assert summary['matrix'] == MATRIX
    assert summary['widths'] == list(WIDTHS)
    # diagonal 0.5 + 0.6 + 0.7 + 0.8 = 2.6 -> 0.65; the other 12 entries sum to 8.44 - 2.6 = 5.84 -> 0.48667
    assert summary['diagonal_mean'] == pytest.approx(0.65)
    assert summary['cross_width_mean'] == pytest.approx(5.84 / 12)


def test_diagonal_and_cross_width_means_keep_the_units_and_refuse_non_square_matrices():
    percent = torch.tensor(MATRIX) * 100  # the benchmarks compare runs in mAP %
    diagonal, cross = diagonal_and_cross_width_means(percent)
    assert diagonal == pytest.approx(65.0) and cross == pytest.approx(584 / 12)
    assert diagonal_and_cross_width_means([[0.7]]) == (pytest.approx(0.7), None)  # one width: nothing across
    with pytest.raises(ValueError, match=r'square \(m, m\) matrix, got shape \(2, 3\)'):
        diagonal_and_cross_width_means([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])


def test_summary_accepts_tensors_and_arrays_and_passes_a_compatible_matrix():
    compatible = torch.tensor([[0.5, 0.5, 0.6], [0.1, 0.6, 0.7], [0.1, 0.2, 0.8]])
    for matrix in (compatible, compatible.numpy()):
        summary = summarize_compatibility(matrix, (0.5, 0.75, 1.0))
        assert summary['self_compatible'] is True and summary['violations'] == []  # equality counts as compatible
        assert summary['mean'] == pytest.approx(float(compatible.double().mean()))


@pytest.mark.parametrize('matrix, widths, message', [
    ([[0.5, 0.6], [0.5, 0.6]], WIDTHS, r'shape \(2, 2\) but 4 widths'),
    (MATRIX, (0.5, 0.25, 0.75, 1.0), 'strictly ascending'),
    ([[50.0]], (1.0,), r'fractions in \[0, 1\].*divide by 100'),
    ([[float('nan')]], (1.0,), 'NaN or inf'),
    ([[0.5]], (), 'widths is empty'),
])
def test_bad_matrices_raise(matrix, widths, message):
    with pytest.raises(ValueError, match=message):
        summarize_compatibility(matrix, widths)


def test_text_table():
    table = format_compatibility_table(MATRIX, WIDTHS)
    lines = table.splitlines()
    assert len(lines) == 5
    for label in ('φ_1/16', 'φ_1/4', 'φ_9/16', 'φ'):
        assert label in lines[0]
    assert lines[1].split() == ['φ_1/16', '50.00', '55.00', '40.00', '70.00']
    assert lines[4].split() == ['φ', '10.00', '60.00', '70.00', '80.00']


def test_markdown_table():
    table = format_compatibility_table(MATRIX, WIDTHS, fmt='markdown')
    lines = table.splitlines()
    assert lines[0] == '| query \\ gallery | φ_1/16 | φ_1/4 | φ_9/16 | φ |'
    assert lines[1].startswith('| --- |')
    assert lines[3] == '| φ_1/4 | 10.00 | 60.00 | 65.00 | 59.00 |'


def test_unknown_table_format_raises():
    with pytest.raises(ValueError, match="fmt must be 'text' or 'markdown'"):
        format_compatibility_table(MATRIX, WIDTHS, fmt='html')


def test_heatmap_is_a_png_written_atomically(tmp_path):
    path = tmp_path / 'figures' / 'compat.png'
    written = plot_compatibility_heatmap(MATRIX, WIDTHS, path, title='test matrix')
    assert written == path
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 1000
    assert [p.name for p in path.parent.iterdir()] == ['compat.png']  # no temporary file left behind
    # overwriting works and stays a valid PNG
    plot_compatibility_heatmap(np.asarray(MATRIX), WIDTHS, path)
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_heatmap_failure_leaves_no_file(tmp_path):
    with pytest.raises(ValueError):
        plot_compatibility_heatmap([[2.0]], (1.0,), tmp_path / 'bad.png')
    assert list(tmp_path.iterdir()) == []
