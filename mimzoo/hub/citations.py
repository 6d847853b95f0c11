"""BibTeX for each method's paper, keyed by the arXiv id the method registry records (``MethodSpec.paper``).

Entries are those the authors publish in their repositories (facebookresearch/mae, open-mmlab mmselfsup and
mmpretrain), or, where that disagrees with the paper, the paper's: LocalMIM's authors in the order of the CVPR paper
(huawei-noah/Efficient-Computing's README lists them in another), Beyond Masking's as on arXiv. A paper without one
here gets an entry built from its arXiv id.
"""

from __future__ import annotations

CITATIONS: dict[str, str] = {
    "arXiv:2111.06377": """@Article{MaskedAutoencoders2021,
  author  = {Kaiming He and Xinlei Chen and Saining Xie and Yanghao Li and Piotr Doll{\\'a}r and Ross Girshick},
  journal = {arXiv:2111.06377},
  title   = {Masked Autoencoders Are Scalable Vision Learners},
  year    = {2021},
}""",
    "arXiv:2303.02416": """@article{PixMIM,
  author  = {Yuan Liu and Songyang Zhang and Jiacheng Chen and Kai Chen and Dahua Lin},
  journal = {arXiv:2303.02416},
  title   = {PixMIM: Rethinking Pixel Reconstruction in Masked Image Modeling},
  year    = {2023},
}""",
    "arXiv:2308.00261": """@article{MFF,
  title   = {Improving Pixel-based MIM by Reducing Wasted Modeling Capability},
  author  = {Yuan Liu and Songyang Zhang and Jiacheng Chen and Zhaohui Yu and Kai Chen and Dahua Lin},
  journal = {arXiv:2308.00261},
  year    = {2023},
}""",
    "arXiv:2303.05251": """@inproceedings{wang2023masked,
  title     = {Masked Image Modeling with Local Multi-Scale Reconstruction},
  author    = {Wang, Haoqing and Tang, Yehui and Wang, Yunhe and Guo, Jianyuan and Deng, Zhi-Hong and Han, Kai},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  pages     = {2122--2131},
  year      = {2023},
}""",
    "arXiv:2203.14313": """@article{tian2022beyond,
  title   = {Beyond Masking: Demystifying Token-Based Pre-Training for Vision Transformers},
  author  = {Tian, Yunjie and Xie, Lingxi and Fang, Jiemin and Shi, Mengnan and Peng, Junran and Zhang, Xiaopeng
             and Jiao, Jianbin and Tian, Qi and Ye, Qixiang},
  journal = {arXiv:2203.14313},
  year    = {2022},
}""",
}


def citation(paper: str) -> str:
    """The BibTeX entry for ``paper`` (an ``arXiv:ID`` string)."""
    if paper in CITATIONS:
        return CITATIONS[paper]
    number = paper.removeprefix("arXiv:")
    return (f"@misc{{arxiv{number.replace('.', '_')},\n  eprint        = {{{number}}},\n"
            f"  archivePrefix = {{arXiv}},\n  url           = {{https://arxiv.org/abs/{number}}},\n}}")
