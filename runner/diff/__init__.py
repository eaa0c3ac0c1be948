"""`recipe diff`: what a recipe change *means*, for the reviewer of a pull request.

settings the two resolved documents, key by key (runner/recipe/compare.py, which plan shares)
impact   both recipes compiled and fingerprinted: steps to rerun, stages to retrain, rows (nothing runs)
git      `--git REV`: REV's side of the repository rebuilt in a temp dir, every changed recipe compared
output   text, markdown and JSON renderings of a RecipeDiff
"""
from ..recipe.compare import Change, compare
from .git import diff_git
from .impact import RecipeDiff, diff_files, diff_sides
from .output import render

__all__ = ["Change", "RecipeDiff", "compare", "diff_files", "diff_git", "diff_sides", "render"]
