"""Worked examples users bring from textbooks and papers, with their published answers."""

from __future__ import annotations

import pytest

from nnkit.core.chain import analyze_chain


@pytest.mark.parametrize(
    ("shape", "chain", "output", "params"),
    [
        # CS231n: 10 filters of 5x5x3 -> 10*5*5*3 + 10 = 760
        ("3x32x32", "conv(10,5)", (10, 28, 28), 760),
        # AlexNet conv1 (Krizhevsky et al. 2012, as CS231n computes it): (227 - 11)/4 + 1 = 55, 96*11*11*3 +
        # 96
        ("3x227x227", "conv(96,11,s=4)", (96, 55, 55), 34944),
        # VGG-16 first block: 3x3 convs with padding 1 keep 224; 64*3*3*3 + 64 = 1,792 and 64*3*3*64 + 64 =
        # 36,928
        ("3x224x224", "conv(64,3,p=1) relu conv(64,3,p=1) relu maxpool(2)", (64, 112, 112), 1792 + 36928),
        # ResNet stem: 7x7/2 conv with padding 3 then 3x3/2 max pool with padding 1: 224 -> 112 -> 56, no bias
        ("3x224x224", "conv(64,7,s=2,p=3,bias=false) bn maxpool(3,2,p=1)", (64, 56, 56), 9408 + 128),
        # LeNet-5 (LeCun et al. 1998) on 1x32x32: C1 156, C3 2,416 (full connection table), C5 48,120, F6
        # 10,164
        ("1x32x32", "conv(6,5) avgpool(2) conv(16,5) avgpool(2) conv(120,5) flatten fc(84) fc(10)", (10,),
         156 + 2416 + 48120 + 10164 + 850),
        # torch.nn docs: nn.LSTM(10, 20, 2)
        ("10", "lstm(20,2)", (20,), 5920),
    ],
)
def test_published_answers(shape, chain, output, params):
    a = analyze_chain(shape, chain)
    assert a.output == output and a.params == params


def test_alexnet_conv1_macs_match_the_paper_scale():
    # 96 filters * 55*55 outputs * 11*11*3 weights = 105,415,200 MACs
    assert analyze_chain("3x227x227", "conv(96,11,s=4)").macs == 105_415_200


def test_resnet_stem_receptive_field():
    # 7x7/2 then 3x3/2: r = 1 + 6 + 2*2 = 11, S = 4, P = 3 + 1*2 = 5
    a = analyze_chain("3x224x224", "conv(64,7,s=2,p=3) maxpool(3,2,p=1)")
    assert (a.rf.size, a.rf.stride, a.rf.padding) == ((11, 11), (4, 4), (5, 5))
