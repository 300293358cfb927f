// Writes golden token ids for edgelm's tokenizer tests with transformers.js, an
// independent implementation of HF tokenizers, from the tokenizer.json files in
// ../shared. Usage (from this folder):
//   npm install --ignore-scripts && node make_goldens.mjs [SHARED_DIR] [OUT_DIR]
import fs from 'fs';
import path from 'path';
import { PreTrainedTokenizer, BertTokenizer } from '@huggingface/transformers';

const here = path.dirname(new URL(import.meta.url).pathname);
const shared = process.argv[2] ?? path.join(here, '../../../shared');
const outDir = process.argv[3] ?? path.join(here, '../../src/tokenizer/testdata');

const texts = [
  'Hello world',
  ' Hello world',
  'Hello, World! How are you today?',
  "I'm sure they'll say it's fine; we've done what we'd planned.",
  "DON'T SHOUT, it'S rude",
  'Once upon a time, there was a little girl named Lily.',
  'The year 2024 had 366 days; 3.14159 is pi and 1,000,000 is a million.',
  '12345678901234567890',
  '   leading spaces and trailing   ',
  'tabs\there\tand\nnewlines\n\nand\r\nCRLF',
  '\n\n\n',
  'def foo(x):\n    return x ** 2  # square\n',
  'for (int i = 0; i < n; ++i) { sum += a[i]; }',
  'https://example.com/path?query=value&other=1',
  'user@example.com wrote: <b>bold</b>',
  'Ünïcödé àccénts: café, naïve, résumé, Straße',
  'Привет, мир! Как дела?',
  '我想在apple工作1314151天～',
  'こんにちは世界、カタカナとひらがな',
  '안녕하세요 세계',
  'مرحبا بالعالم',
  'Emoji: 🦙 🚀 😀😁😂 👍🏽 ❤️ ✅',
  '😶‍🌫️ (multiple emojis concatenated)',
  '!!!!!!???...,,,;;;',
  '--- *** ___ === +++',
  'e=mc^2, a≠b, ∑x², √2 ≈ 1.414',
  '$100 €50 £20 ¥1000',
  'MiXeD CaSe WoRdS and camelCaseIdentifiers and snake_case_ones',
  'A' + 'a'.repeat(60) + ' long word',
  "She said \"yes\" and 'no' and «maybe»",
  '\u00a0non-breaking\u00a0spaces\u2003em space',
  'The quick brown fox jumps over the lazy dog.',
];

function load(dir) {
  return JSON.parse(fs.readFileSync(path.join(shared, 'tokenizers', dir, 'tokenizer.json'), 'utf8'));
}

function write(file, source, tokenizer, cases) {
  const out = { source, generator: 'tools/tokenizer-goldens/make_goldens.mjs (transformers.js)', cases };
  fs.writeFileSync(path.join(outDir, file), JSON.stringify(out, null, 0).replace(/\},\{/g, '},\n{') + '\n');
  console.log(`${file}: ${cases.length} cases`);
}

const smollm = new PreTrainedTokenizer(load('smollm2-135m-instruct'), {});
const smollmCases = texts.map((text) => ({
  text, add_special: false, parse_special: false,
  ids: Array.from(smollm.encode(text, { add_special_tokens: false })),
}));
// transformers.js always recognizes special tokens written in the text.
for (const text of ['<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n',
                    '<|endoftext|>Text after end<|im_end|>']) {
  smollmCases.push({ text, add_special: false, parse_special: true,
                     ids: Array.from(smollm.encode(text, { add_special_tokens: false })) });
}
write('smollm2_goldens.json', 'smollm2-135m-instruct/tokenizer.json', smollm, smollmCases);

const minilmConfig = JSON.parse(fs.readFileSync(
    path.join(shared, 'tokenizers/all-minilm-l6-v2/tokenizer_config.json'), 'utf8'));
const minilm = new BertTokenizer(load('all-minilm-l6-v2'), minilmConfig);
const minilmCases = [];
texts.forEach((text, i) => {
  const addSpecial = i % 2 === 0;
  minilmCases.push({ text, add_special: addSpecial, parse_special: false,
                     ids: Array.from(minilm.encode(text, { add_special_tokens: addSpecial })) });
});
write('minilm_goldens.json', 'all-minilm-l6-v2/tokenizer.json', minilm, minilmCases);
