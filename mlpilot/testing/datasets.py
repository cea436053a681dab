"""Datasets generated exactly in code, whose right features are known: every
tic-tac-toe endgame and every balance-scale experiment."""

from __future__ import annotations

import itertools

import pandas as pd

CELLS = [f"{r}_{c}" for r in ("top", "middle", "bottom") for c in ("left", "middle", "right")]
LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]


def tic_tac_toe() -> pd.DataFrame:
    """Every board on which a legal game ends (x starts): 958 boards; positive when x
    has three in a row."""

    def winner(board: tuple[str, ...]) -> str | None:
        for a, b, c in LINES:
            if board[a] != "b" and board[a] == board[b] == board[c]:
                return board[a]
        return None

    ends: set[tuple[str, ...]] = set()

    def play(board: tuple[str, ...], player: str) -> None:
        if winner(board) or "b" not in board:
            ends.add(board)
            return
        for i, cell in enumerate(board):
            if cell == "b":
                play((*board[:i], player, *board[i + 1 :]), "o" if player == "x" else "x")

    play(("b",) * 9, "x")
    rows = [dict(zip(CELLS, b, strict=True)) | {"x_wins": winner(b) == "x"} for b in ends]
    return pd.DataFrame(rows).sort_values(CELLS).reset_index(drop=True)


def balance_scale() -> pd.DataFrame:
    """All 625 combinations of weights and distances 1-5 on each side; the side with
    the larger weight × distance goes down (B: balanced)."""
    rows = []
    for lw, ld, rw, rd in itertools.product(range(1, 6), repeat=4):
        left, right = lw * ld, rw * rd
        tip = "L" if left > right else ("R" if right > left else "B")
        rows.append(
            {
                "left_weight": lw,
                "left_distance": ld,
                "right_weight": rw,
                "right_distance": rd,
                "balance": tip,
            }
        )
    return pd.DataFrame(rows)


TTT_TEXT = (
    "Tic-tac-toe endgames: every board on which a legal game ends, x moving first. "
    "Each column is one square of the 3x3 board (top_left ... bottom_right) holding "
    "x, o or b (blank). x_wins is true when x has three in a row (a row, a column or a "
    "diagonal)."
)
BALANCE_TEXT = (
    "Balance scale experiments: a weight on each side of a scale at some distance from "
    "the centre (weights and distances 1 to 5). The scale tips to the left (L), to the "
    "right (R) or balances (B)."
)
